"""The block event log: one JSON line per blocked or would-have-blocked lookup, written off the event loop."""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import time

from . import wire
from .codes import QTYPES, Action, Verdict

blocks = logging.getLogger("resolverguard.blocks")
_listener: _Writer | None = None


def setup_events(target: str) -> None:
    """Send block events to stdout ("-"), a file path, or nowhere (""); writing happens in a thread."""
    global _listener
    stop_events()
    blocks.handlers.clear()
    blocks.propagate = False
    if not target:
        blocks.disabled = True
        return
    blocks.disabled = False
    # a file is reopened when logrotate has moved it away (checked per event) and at once on SIGHUP
    sink = (
        logging.StreamHandler(sys.stdout)
        if target == "-"
        else logging.handlers.WatchedFileHandler(target, encoding="utf-8")
    )
    sink.setFormatter(logging.Formatter("%(message)s"))
    q: queue.SimpleQueue = queue.SimpleQueue()
    blocks.addHandler(logging.handlers.QueueHandler(q))
    blocks.setLevel(logging.INFO)
    _listener = _Writer(q, sink)
    _listener.start()


def reopen_events() -> None:
    """SIGHUP: if the events file was rotated (renamed or removed), start a new one now, in the writer thread."""
    if _listener is not None:
        for handler in _listener.handlers:
            if isinstance(handler, logging.handlers.WatchedFileHandler):
                _listener.queue.put_nowait(_REOPEN)


class _Reopen(logging.LogRecord):
    """A queue item that is not an event: the writer thread reopens the file instead of writing."""


_REOPEN = _Reopen("resolverguard.blocks", logging.INFO, __file__, 0, "", None, None)


class _Writer(logging.handlers.QueueListener):
    def handle(self, record: logging.LogRecord) -> None:
        if record is _REOPEN:
            for handler in self.handlers:
                if isinstance(handler, logging.handlers.WatchedFileHandler):
                    handler.reopenIfNeeded()
            return
        super().handle(record)


def stop_events() -> None:
    """Flush and stop the writer thread (at exit, or before reconfiguring)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


atexit.register(stop_events)


def emit_block(query: wire.Query, decision) -> bool:
    """Record one blocked (or, in log-only mode, would-have-blocked) lookup; whether an event was written."""
    if blocks.disabled or not blocks.handlers:
        return False
    typo, rpz = decision.typo, decision.rpz
    event = {
        "time": timestamp(),
        "client": query.client,
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
    emit_event(event)
    return True


def timestamp() -> str:
    """UTC time with milliseconds, as every event carries it."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def emit_event(event: dict) -> None:
    """Write one event (a block, a sink rejection) as one JSON line."""
    if blocks.disabled or not blocks.handlers:
        return
    blocks.info(json.dumps(event, separators=(",", ":")))
