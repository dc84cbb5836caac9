"""The event log: one JSON line per block, sink refusal or other event, written in batches off the event loop.

Recording an event costs the DNS loop one append of a compact record to a bounded buffer: for a block, the
decision's precomputed line tail (block_tail(), once per remembered question) and the client, handed back by
the UDP fast path for the blocks it answers itself. A writer thread formats what has accumulated and writes
it with one write() per batch (at most PIPE_BUF octets at a time to a pipe, whole lines each, so processes
sharing stdout never interleave inside a line). The file is checked for rotation (moved away or removed by
logrotate) before each batch (at most INTERVAL apart: one stat for thousands of lines when busy), once a second
when idle, and at once after SIGHUP (reopen_events()): a line written after logrotate's rename goes to the new file. When the writer cannot keep up
and the buffer is full, or a write fails, the events are counted in resolverguard_events_dropped_total
(reason full or write_error): the DNS loop never waits for the disk, and no event is lost silently.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import socket
import stat
import sys
import threading
import time

from . import wire
from .codes import QTYPES, Action, Verdict

log = logging.getLogger(__name__)
MAX_PENDING = 100_000  # events buffered for the writer at most; more are dropped and counted
INTERVAL = 0.02  # seconds between batches while events come in
IDLE_INTERVAL = 0.1  # seconds between looks at the buffer while none do
ROTATION_CHECK = 1.0  # seconds between checks whether the events file was moved away
YIELD_EVERY = 256  # lines formatted between two releases of the GIL
PIPE_CHUNK = 4096  # PIPE_BUF: a write of at most this many octets to a pipe is never interleaved


def block_tail(query: wire.Query, decision) -> str:
    """What follows the client in a block event's line; the same for every lookup of one remembered question."""
    typo, rpz = decision.typo, decision.rpz
    fields = {
        "qname": query.qname,
        "qtype": QTYPES.get(query.qtype, str(query.qtype)),
        "transport": "tcp" if query.tcp else "udp",
        "action": Action.LOG_ONLY if decision.outcome == Verdict.LOGGED_TYPO else decision.action,
        "outcome": decision.outcome,
        "protected": typo.protected if typo else None,
        "class": typo.typo_class if typo else None,
        "distance": typo.distance if typo else None,
        "neighbour": typo.neighbour if typo else None,
        "rule": f"{rpz.zone}:{rpz.owner}" if rpz else "typo-detector",
    }
    return "," + json.dumps(fields, separators=(",", ":"))[1:] + "\n"


def timestamp(now: float | None = None) -> str:
    """UTC time with milliseconds, as every event carries it."""
    now = time.time() if now is None else now
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


class EventLog:
    """The bounded buffer and its writer thread for one destination ("-": stdout, else a file path)."""

    def __init__(self, target: str, dropped_full=None, dropped_write=None) -> None:
        self.target = target
        self.counts, self.full_slot = (dropped_full.counts, dropped_full.slot) if dropped_full else (None, -1)
        self.write_counts, self.write_slot = (dropped_write.counts, dropped_write.slot) if dropped_write else (None, -1)
        # Items: (wall time, [(tail, client), ...]) for blocks, or a dict for any other event. deque.append
        # and popleft are atomic: the loop appends, the writer takes, no lock between them.
        self.items: collections.deque = collections.deque()
        self.queued = 0  # events appended (only the loop's threads write it)
        self.taken = 0  # events taken by the writer (only the writer writes it)
        self.dropped = 0  # events dropped because the buffer was full
        self.write_errors = 0  # events lost to failed writes
        self.fd = -1
        self.pipe = False
        self.identity: tuple[int, int] | None = None
        self.reopen = False
        self.stopping = False
        self.wake = threading.Event()
        self.hosts: dict[object, str] = {}  # client (address octets or text) -> its JSON string
        self.second, self.prefix = -1, ""
        self._open()
        self.thread = threading.Thread(target=self._run, name="events", daemon=True)
        self.thread.start()

    # ------------------------------------------------------------ the loop's side: append, never wait

    def blocks(self, pairs: list, now: float | None = None) -> None:
        """Record block events: pairs of (block_tail(...), client address text or octets)."""
        n = len(pairs)
        if self.queued - self.taken + n > MAX_PENDING:
            self._drop(n)
            return
        self.queued += n
        self.items.append((time.time() if now is None else now, pairs))

    def event(self, event: dict) -> None:
        """Record one event of any kind (a dict with its "time" and "event" keys)."""
        if self.queued - self.taken >= MAX_PENDING:
            self._drop(1)
            return
        self.queued += 1
        self.items.append(event)

    def _drop(self, n: int) -> None:
        self.dropped += n
        if self.counts is not None:
            self.counts[self.full_slot] += n

    # ------------------------------------------------------------ the writer thread

    def _open(self) -> None:
        """Open the destination (a file: appended to, created if missing); OSError propagates at start-up."""
        if self.target == "-":
            try:
                self.fd = sys.stdout.fileno()
            except (AttributeError, ValueError, OSError):  # no real stdout (embedded): nothing to write to
                self.fd = -1
            mode = os.fstat(self.fd).st_mode if self.fd >= 0 else 0
        else:
            self.fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
            info = os.fstat(self.fd)
            self.identity, mode = (info.st_dev, info.st_ino), info.st_mode
        self.pipe = not stat.S_ISREG(mode)

    def _rotated(self) -> bool:
        """Whether the events file at the path is no longer the one written to (renamed or removed)."""
        try:
            info = os.stat(self.target)
        except FileNotFoundError:
            return True
        return (info.st_dev, info.st_ino) != self.identity

    def _check_rotation(self) -> None:
        if self.target == "-" or not self._rotated():
            return
        old = self.fd
        try:
            self._open()
        except OSError as exc:
            log.warning("cannot reopen the events file path=%s error=%s", self.target, exc.strerror or exc)
            return
        os.close(old)

    def _run(self) -> None:
        checked, busy = time.monotonic(), False
        while True:
            stopping = self.stopping
            busy = bool(self.items)
            now = time.monotonic()
            # before each batch (one stat for thousands of lines when busy), after SIGHUP, and once a second
            if busy or self.reopen or now - checked >= ROTATION_CHECK:
                self.reopen, checked = False, now
                self._check_rotation()
            if busy:
                self._flush()
            if stopping:
                if self.fd >= 0 and self.target != "-":
                    os.close(self.fd)
                return
            self.wake.wait(INTERVAL if busy else IDLE_INTERVAL)
            self.wake.clear()

    def _flush(self) -> None:
        lines, taken, yielded, popleft = [], 0, 0, self.items.popleft
        append, hosts, stamp = lines.append, self.hosts, self._stamp
        while self.items:
            item = popleft()
            if type(item) is dict:
                taken += 1
                append(json.dumps(item, separators=(",", ":")) + "\n")
                continue
            now, pairs = item
            taken += len(pairs)
            head = '{"time":"' + stamp(now) + '","event":"block","client":'
            for tail, client in pairs:
                host = hosts.get(client)
                if host is None:
                    host = self._host(client)
                append(head + host + tail)
            if len(lines) >= YIELD_EVERY * (1 + yielded):
                yielded += 1
                time.sleep(0)  # let the DNS loop have the GIL instead of waiting out the switch interval
        self.taken += taken
        self._write("".join(lines).encode(), taken)

    def _stamp(self, now: float) -> str:
        second = int(now)
        if second != self.second:
            self.second, self.prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self.prefix}.{int(now * 1000) % 1000:03d}Z"

    def _host(self, client: object) -> str:
        if len(self.hosts) >= 65_536:
            self.hosts.clear()
        if isinstance(client, bytes):  # the compiled loop's address octets
            text = socket.inet_ntop(socket.AF_INET if len(client) == 4 else socket.AF_INET6, client)
        else:
            text = str(client)
        host = self.hosts[client] = json.dumps(text)
        return host

    def _write(self, data: bytes, events: int) -> None:
        if self.fd < 0:
            return
        view, size = memoryview(data), len(data)
        pos = 0
        try:
            while pos < size:
                end = size
                if self.pipe and size - pos > PIPE_CHUNK:  # whole lines of at most PIPE_BUF octets
                    cut = data.rfind(b"\n", pos, pos + PIPE_CHUNK)
                    end = cut + 1 if cut >= pos else min(size, data.find(b"\n", pos) + 1 or size)
                pos += os.write(self.fd, view[pos:end])
        except OSError as exc:
            lost = events if pos == 0 else max(1, data.count(b"\n", pos))
            self.write_errors += lost
            if self.write_counts is not None:
                self.write_counts[self.write_slot] += lost
            log.warning("cannot write events lost=%d error=%s", lost, exc.strerror or exc)

    def stop(self) -> None:
        """Write what is buffered, close, end the thread."""
        self.stopping = True
        self.wake.set()
        self.thread.join(10)


_log: EventLog | None = None


def setup_events(target: str, metrics=None) -> None:
    """Send events to stdout ("-"), a file path, or nowhere (""); metrics: where drops are counted."""
    global _log
    stop_events()
    if target:
        full = metrics.events_dropped.labels("full") if metrics is not None else None
        write = metrics.events_dropped.labels("write_error") if metrics is not None else None
        _log = EventLog(target, full, write)


def enabled() -> bool:
    """Whether events are being written."""
    return _log is not None


def reopen_events() -> None:
    """SIGHUP: if the events file was rotated (renamed or removed), start a new one now, in the writer thread."""
    if _log is not None:
        _log.reopen = True
        _log.wake.set()


def stop_events() -> None:
    """Flush and stop the writer thread (at exit, or before reconfiguring)."""
    global _log
    if _log is not None:
        _log.stop()
        _log = None


def _forget_in_child() -> None:
    """A forked process (the sink's) has no writer thread and must not write what its parent buffered."""
    global _log
    if _log is not None and _log.fd >= 0 and _log.target != "-":
        os.close(_log.fd)
    _log = None


atexit.register(stop_events)
os.register_at_fork(after_in_child=_forget_in_child)


def emit_blocks(pairs: list, now: float | None = None) -> None:
    """Block events handed back by the UDP fast path: (block_tail, client) pairs answered at one time."""
    if _log is not None:
        _log.blocks(pairs, now)


def emit_block(query: wire.Query, decision, tail: str | None = None) -> bool:
    """Record one blocked (or, in log-only mode, would-have-blocked) lookup; whether an event was written.

    tail: block_tail(query, decision) when the caller has it already (remembered with the decision)."""
    if _log is None:
        return False
    _log.blocks([(tail or block_tail(query, decision), query.client)])
    return True


def emit_event(event: dict) -> None:
    """Write one event (a sink rejection, a policy-service event, ...) as one JSON line."""
    if _log is not None:
        _log.event(event)
