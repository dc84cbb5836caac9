"""The SMTP sink: at RCPT TO, rerun the typo detector on the recipient's domain and refuse with a suggestion.

The sink never accepts a recipient, so it never reads message content: nothing is stored on this host.
refusal() is the pure core; SmtpSink is the listener (aiosmtpd does the protocol).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP, Envelope, Session

from . import names
from .config import Config
from .events import emit_event, timestamp
from .metrics import Metrics
from .policy import Policy
from .typo import TypoMatch

log = logging.getLogger(__name__)
logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command at INFO: ours are the events
_CODES = {"reject": (550, "5.1.2"), "defer": (450, "4.1.2")}  # 5.1.2: bad destination system address


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
    """The SMTP sink service: listens on [smtp_sink] listen, reads the policy in force at every RCPT."""

    name = "smtp_sink"

    def __init__(
        self,
        cfg: Config,
        current_policy: Callable[[], Policy],
        settings: Callable[[], Config],
        metrics: Metrics,
        reuse_port: bool = False,
    ) -> None:
        self.cfg, self.metrics, self.reuse_port = cfg, metrics, reuse_port
        self.handler = SinkHandler(current_policy, settings, metrics)
        self.sessions: set[SinkSession] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.addresses: list[tuple[str, int]] = []
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Listen from a thread with its own event loop: a flood of SMTP sessions cannot starve the DNS loop."""
        started: concurrent.futures.Future = concurrent.futures.Future()
        self.thread = threading.Thread(target=self._thread, args=(started,), name="smtp-sink", daemon=True)
        self.thread.start()
        await asyncio.wrap_future(started)  # re-raises a bind error here, at start-up

    def _thread(self, started: concurrent.futures.Future) -> None:
        loop = self.loop = _new_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._listen())
        except BaseException as exc:  # noqa: BLE001 -- handed to start(), which raises it in the main loop
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(None)
        loop.run_forever()
        loop.close()

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        for ep in self.cfg.smtp_sink_listen:
            family = socket.AF_INET6 if ":" in ep.host else socket.AF_INET
            server = await loop.create_server(
                lambda: SinkSession(self),
                ep.host,
                ep.port,
                family=family,
                reuse_port=self.reuse_port or None,
                backlog=1024,
            )
            self.servers.append(server)
            port = server.sockets[0].getsockname()[1]
            self.addresses.append((ep.host, port))
            log.info(
                "smtp sink listening address=%s port=%d mode=%s max_sessions=%d",
                ep.host,
                port,
                self.cfg.smtp_sink_mode,
                self.cfg.smtp_sink_max_sessions,
            )

    async def stop(self, grace: float) -> None:
        if self.thread is None or self.loop is None:
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._close(), self.loop))
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self.thread.join, grace)

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
