"""The SMTP sink: at RCPT TO, rerun the typo detector on the recipient's domain and refuse with a suggestion.

The sink never accepts a recipient, so it never reads message content: nothing is stored on this host.
refusal() is the pure core; SmtpSink is the listener (aiosmtpd does the protocol); SinkProcess runs it in a
process of its own, forked per policy snapshot, so an SMTP flood never competes with DNS for the GIL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP, Envelope, Session

from . import names
from .config import Config
from .events import emit_event, reopen_events, setup_events, stop_events, timestamp
from .metrics import Metrics
from .policy import Policy
from .typo import TypoMatch

log = logging.getLogger(__name__)
logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command at INFO: ours are the events
_CODES = {"reject": (550, "5.1.2"), "defer": (450, "4.1.2")}  # 5.1.2: bad destination system address
EVENT_RATE = 10.0  # sink_rejection event lines per second per MTA, once its burst is spent
EVENT_BURST = 20.0  # lines an MTA may cause at once
FOLD_INTERVAL = 1.0  # seconds between the sink_folded lines that account for the refusals not written


class EventLimit:
    """Per-MTA token bucket for sink_rejection event lines; what it holds back is folded, counted, and written
    as one sink_folded line per MTA and second, so every refusal is accounted for in the log."""

    def __init__(self, folded_counter, clock: Callable[[], float] = time.monotonic) -> None:
        self.folded_counter, self.clock = folded_counter, clock
        self.buckets: dict[str, tuple[float, float]] = {}
        self.folded: dict[str, int] = {}

    def admit(self, mta: str) -> bool:
        """Whether this refusal gets its own event line; False: folded (and counted)."""
        now = self.clock()
        tokens, last = self.buckets.get(mta, (EVENT_BURST, now))
        tokens = min(EVENT_BURST, tokens + (now - last) * EVENT_RATE)
        if len(self.buckets) > 10_000:
            self.buckets.clear()
        if tokens >= 1:
            self.buckets[mta] = (tokens - 1, now)
            return True
        self.buckets[mta] = (tokens, now)
        self.folded[mta] = self.folded.get(mta, 0) + 1
        self.folded_counter.inc()
        return False

    def flush(self) -> None:
        """One sink_folded line per MTA with refusals folded since the last flush."""
        folded, self.folded = self.folded, {}
        for mta, count in folded.items():
            emit_event({"time": timestamp(), "event": "sink_folded", "mta": mta, "count": count})


@dataclass(frozen=True, slots=True)
class Refusal:
    """The reply to one RCPT TO, and what it is about."""

    code: int
    status: str  # enhanced status code (RFC 3463)
    text: str
    recipient: str
    match: TypoMatch | None = None
    suggestion: str | None = None

    def line(self) -> str:
        return f"{self.code} {self.status} {self.text}"


def suggest(recipient_domain: str, match: TypoMatch) -> str:
    """The domain the sender meant: the neighbour part replaced by the protected domain.

    army.ml -> army.mil, mail.army.ml -> mail.army.mil; for a whole-TLD entry (mil) the detector already
    names the label under the protected TLD (army.ml resembles army.mil), so the same rule applies.
    """
    neighbour = match.neighbour
    if recipient_domain == neighbour:
        return match.protected
    if recipient_domain.endswith("." + neighbour):
        return recipient_domain[: -len(neighbour)] + match.protected
    return match.protected


def refusal(recipient: str, policy: Policy, mode: str, template: str) -> Refusal:
    """What the sink answers for one recipient address; pure (the policy snapshot decides)."""
    local, at, domain_text = recipient.rpartition("@")
    try:
        domain = names.query_text(domain_text) if at and local else ""
    except ValueError:
        domain = ""
    match = policy.mail_match(domain, time.time()) if domain else None  # domain-wide exceptions too
    if match is None:  # not a typo-neighbour: nothing to suggest, and this host relays nothing
        return Refusal(
            550, "5.1.1", f"<{recipient}>: no such mailbox here; this host accepts no mail. Not delivered.", recipient
        )
    suggestion = f"{local}@{suggest(domain, match)}"
    code, status = _CODES[mode]
    text = template.format(
        recipient=recipient,
        domain=domain,
        protected=match.protected,
        typo_class=match.typo_class,
        suggestion=suggestion,
    )
    return Refusal(code, status, text, recipient, match, suggestion)


class SinkHandler:
    """aiosmtpd hooks: every RCPT TO is refused, counted and logged as one event."""

    def __init__(self, current_policy: Callable[[], Policy], settings: Callable[[], Config], metrics: Metrics) -> None:
        self.current_policy, self.settings, self.metrics = current_policy, settings, metrics
        self.limit = EventLimit(metrics.sink_events_folded)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        cfg = self.settings()
        answer = refusal(address, self.current_policy(), cfg.smtp_sink_mode, cfg.smtp_sink_template)
        m = answer.match
        mode = cfg.smtp_sink_mode
        entry = self.current_policy().entry_of(m) if m else "none"  # the entry as configured: mil for army.mil
        self.metrics.sink_rejections.labels(entry, m.typo_class if m else "none", mode).inc()
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        if not self.limit.admit(peer):
            return answer.line()
        emit_event(
            {
                "time": timestamp(),
                "event": "sink_rejection",
                "mta": peer,
                "sender": envelope.mail_from,
                "recipient": address,
                "protected": m.protected if m else None,
                "class": m.typo_class if m else None,
                "suggestion": answer.suggestion,
                "mode": mode,
                "reply": f"{answer.code} {answer.status}",
            }
        )
        log.debug("sink refused recipient=%s mta=%s code=%d", address, peer, answer.code)
        return answer.line()


class SinkSession(SMTP):
    """One SMTP session, bounded: a session cap (421 when full), a whole-session timeout, no DATA, no VRFY/EXPN."""

    def __init__(self, sink: SmtpSink) -> None:
        cfg = sink.cfg
        super().__init__(
            sink.handler,
            hostname=cfg.smtp_sink_hostname,
            ident="resolverguard sink",
            timeout=cfg.smtp_sink_command_timeout,
            command_call_limit=cfg.smtp_sink_max_commands,
            data_size_limit=0,
            enable_SMTPUTF8=True,  # IDN look-alike recipients (user@gmaіl.com) get their "did you mean" too
            loop=asyncio.get_running_loop(),
        )
        self.sink = sink
        self.admitted = False
        self.session_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sessions = self.sink.sessions
        if len(sessions) >= self.sink.cfg.smtp_sink_max_sessions or self.sink.stopping:
            self.sink.metrics.sink_sessions_refused.inc()
            transport.write(b"421 4.3.2 resolverguard sink: too many sessions, try again later\r\n")
            transport.close()
            return
        self.admitted = True
        sessions.add(self)
        self.sink.metrics.sink_sessions.set(len(sessions))
        self.session_timer = self.loop.call_later(self.sink.cfg.smtp_sink_session_timeout, self._session_over)
        super().connection_made(transport)

    def _session_over(self) -> None:
        if self.transport is not None:
            self.transport.write(b"421 4.4.2 resolverguard sink: session time limit reached\r\n")
            self.transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        if not self.admitted:
            return
        self.admitted = False
        if self.session_timer is not None:
            self.session_timer.cancel()
        self.sink.sessions.discard(self)
        self.sink.metrics.sink_sessions.set(len(self.sink.sessions))
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if not self.admitted:
            return False
        return super().eof_received()

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            super().data_received(data)

    async def smtp_DATA(self, arg: str) -> None:  # never reached after a refused RCPT; never reads content
        await self.push("554 5.3.2 resolverguard sink: no message content is accepted here")

    async def smtp_VRFY(self, arg: str) -> None:
        await self.push("502 5.5.1 VRFY disabled")

    async def smtp_EXPN(self, arg: str) -> None:
        await self.push("502 5.5.1 EXPN disabled")


class SmtpSink:
    """The sink's listeners and sessions in the sink process: a thread with its own event loop serving the
    sockets SinkProcess bound, reading one policy snapshot at every RCPT."""

    def __init__(
        self,
        cfg: Config,
        current_policy: Callable[[], Policy],
        settings: Callable[[], Config],
        metrics: Metrics,
        sockets: list[socket.socket],
    ) -> None:
        self.cfg, self.metrics, self.sockets = cfg, metrics, sockets
        self.handler = SinkHandler(current_policy, settings, metrics)
        self.sessions: set[SinkSession] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def _thread(self, started: concurrent.futures.Future) -> None:
        loop = self.loop = _new_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._listen())
        except BaseException as exc:  # noqa: BLE001 -- handed to the process's main thread, which exits on it
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(None)
        self._fold_timer(loop)
        loop.run_forever()
        loop.close()

    def _fold_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self.handler.limit.flush()
        loop.call_later(FOLD_INTERVAL, self._fold_timer, loop)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            self.servers.append(await loop.create_server(lambda: SinkSession(self), sock=sock, backlog=1024))

    async def _close(self) -> None:
        self.stopping = True
        for server in self.servers:
            server.close()
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.write(b"421 4.3.2 resolverguard sink: shutting down\r\n")
                session.transport.close()
        for server in self.servers:
            await server.wait_closed()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


class SinkProcess:
    """The sink in a process of its own, so SMTP floods never take the DNS loop's GIL.

    The listening sockets are bound here, once. Each policy snapshot (at start, after every reload, after a
    label is learned) gets a child forked from this process: it inherits the snapshot as it is (nothing is
    re-read or re-parsed) and the sockets, counts into its own tally file (added up with this process's by
    the /metrics collector, as --workers does) and writes its own events. The child serving the previous
    snapshot is stopped first (its open sessions get 421 and the MTA retries); connections wait in the
    sockets' backlog meanwhile.
    """

    name = "smtp_sink"
    FOLLOW = 0.25  # seconds between looks at the policy in force

    def __init__(
        self,
        cfg: Config,
        current_policy: Callable[[], Policy],
        settings: Callable[[], Config],
        metrics_dir: str,
        on_publish: list[Callable[[Policy], None]],
        reuse_port: bool = False,
    ) -> None:
        self.reuse_port = reuse_port  # --workers: every worker's sink shares the port
        self.cfg, self.current_policy, self.settings, self.metrics_dir = cfg, current_policy, settings, metrics_dir
        self.on_publish = on_publish  # the policy holder's: a reload forks the next child at once
        self.ack: socket.socket | None = None
        self.sockets: list[socket.socket] = []
        self.pid = 0
        self.old: list[int] = []
        self.served: Policy | None = None  # the snapshot the running child serves
        self.task: asyncio.Future | None = None

    async def start(self) -> None:
        for ep in self.cfg.smtp_sink_listen:
            family = socket.AF_INET6 if ":" in ep.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((ep.host, ep.port))
                sock.listen(1024)
            except OSError:
                sock.close()
                raise
            sock.set_inheritable(True)
            self.sockets.append(sock)
            log.info(
                "smtp sink listening address=%s port=%d mode=%s max_sessions=%d process=own",
                ep.host,
                sock.getsockname()[1],
                self.cfg.smtp_sink_mode,
                self.cfg.smtp_sink_max_sessions,
            )
        self._respawn()
        self.on_publish.append(lambda _policy: self._respawn())
        self.task = asyncio.ensure_future(self._follow())

    def _respawn(self) -> None:
        if self.pid:  # the previous snapshot's child stops accepting first (it says so; at most a second)
            _signal(self.pid, signal.SIGTERM)
            self.old.append(self.pid)
            select.select([self.ack], [], [], 1.0)
        if self.ack is not None:
            self.ack.close()
        self.ack, ack = socket.socketpair()
        self.served = policy = self.current_policy()
        settings = self.settings()
        pid = os.fork()
        if pid == 0:
            self.ack.close()
            _child(self.cfg, policy, settings, self.sockets, self.metrics_dir, ack)  # never returns
        ack.close()
        self.pid = pid
        log.debug("smtp sink process pid=%d generation=%d", pid, policy.generation)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.FOLLOW)
            self.old = [pid for pid in self.old if not _reaped(pid)]
            if _reaped(self.pid):
                log.error("smtp sink process died pid=%d: starting another", self.pid)
                self.pid = 0
                self._respawn()
            elif self.current_policy() is not self.served:  # a learned label or an expiry: a new snapshot
                self._respawn()

    async def stop(self, grace: float) -> None:
        if self.task is not None:
            self.task.cancel()
        pids = [p for p in (*self.old, self.pid) if p]
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if not _reaped(p)]
            await asyncio.sleep(0.05)
        for pid in pids:
            _signal(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for sock in self.sockets:
            sock.close()
        if self.ack is not None:
            self.ack.close()


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reaped(pid: int) -> bool:
    """Whether the child has ended (and is now reaped)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True


def _child(
    cfg: Config, policy: Policy, settings: Config, sockets: list[socket.socket], metrics_dir: str, ack: socket.socket
) -> None:
    """The forked sink process: serve one policy snapshot until SIGTERM, then exit (never returns)."""
    code = 1
    try:
        stop = threading.Event()
        signal.set_wakeup_fd(-1)  # the parent's event loop's: a signal here must not wake it
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, lambda *_: reopen_events())
        _die_with_parent()
        gc.freeze()  # the inherited heap stays out of this process's collections (and its pages shared)
        from .typo import TYPO_CLASSES

        metrics = Metrics(directory=metrics_dir)
        metrics.declare_sink(sorted(policy.guard.protected), TYPO_CLASSES)
        setup_events(cfg.events, metrics)
        sink = SmtpSink(cfg, lambda: policy, lambda: settings, metrics, sockets=sockets)
        started: concurrent.futures.Future = concurrent.futures.Future()
        sink.thread = threading.Thread(target=sink._thread, args=(started,), name="smtp-sink", daemon=True)
        sink.thread.start()
        started.result()
        while not stop.wait(0.5):
            pass
        asyncio.run_coroutine_threadsafe(_stop_accepting(sink), sink.loop).result(1.0)
        ack.send(b"closed")  # the parent may fork the next snapshot's child now
        asyncio.run_coroutine_threadsafe(sink._close(), sink.loop).result(cfg.shutdown_grace)
        sink.loop.call_soon_threadsafe(sink.handler.limit.flush)
        sink.loop.call_soon_threadsafe(sink.loop.stop)
        sink.thread.join(cfg.shutdown_grace)
        stop_events()
        code = 0
    except BaseException:  # noqa: BLE001 -- a forked child must never return into the parent's code
        log.exception("smtp sink process failed")
    finally:
        os._exit(code)


async def _stop_accepting(sink: SmtpSink) -> None:
    sink.stopping = True
    for server in sink.servers:
        server.close()


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the kernel ends this process with SIGTERM if the guard dies without stopping it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
