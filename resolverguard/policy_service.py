"""The policy service: Postfix's check_policy_service (and Exim's ${readsocket}) asks it at RCPT time.

The I/O edge of delegation.py: one asyncio protocol per connection, bounded (connection cap, idle timeout,
a deadline for each request once begun); a bad request gets delegation's error reply and a closed connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from . import delegation
from .config import Config
from .errors import ConfigError, os_reason
from .events import emit_event, timestamp
from .metrics import Metrics
from .policy import Policy
from .typo import TYPO_CLASSES

log = logging.getLogger(__name__)


class PolicyConnection(asyncio.Protocol):
    def __init__(self, service: PolicyService) -> None:
        self.service = service
        self.reader = delegation.RequestReader()
        self.transport: asyncio.Transport | None = None
        self.idle: asyncio.TimerHandle | None = None
        self.request_timer: asyncio.TimerHandle | None = None
        self.admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        svc = self.service
        if len(svc.connections) >= svc.cfg.policy_max_connections or svc.stopping:
            self.fail(delegation.ProtocolError("too_many_connections", "too many connections, try again later"))
            return
        self.admitted = True
        svc.connections.add(self)
        svc.metrics.policy_connections.set(len(svc.connections))
        self._arm_idle()

    def _arm_idle(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        loop = asyncio.get_running_loop()
        self.idle = loop.call_later(self.service.cfg.policy_idle_timeout, self._close_quietly)

    def _close_quietly(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _timed_out(self) -> None:
        self.fail(delegation.ProtocolError("timeout", "request not complete in time"))

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        was_pending = self.reader.pending
        try:
            requests = self.reader.feed(data)
            for request in requests:
                self.service.answer(request, self.transport)
        except delegation.ProtocolError as exc:
            self.fail(exc)
            return
        self._arm_idle()
        if self.reader.pending and (not was_pending or requests):
            if self.request_timer is not None:
                self.request_timer.cancel()
            loop = asyncio.get_running_loop()
            self.request_timer = loop.call_later(self.service.cfg.policy_request_timeout, self._timed_out)
        elif not self.reader.pending and self.request_timer is not None:
            self.request_timer.cancel()
            self.request_timer = None

    def eof_received(self) -> bool:
        if self.admitted and self.reader.pending:  # half a request, then the end: say so, then close
            self.fail(delegation.ProtocolError("malformed", "connection ended inside a request"))
        return False

    def fail(self, exc: delegation.ProtocolError) -> None:
        self.service.metrics.policy_errors.labels(exc.kind).inc()
        peer = self.transport.get_extra_info("peername") if self.transport else None
        log.warning("policy request refused kind=%s problem=%s client=%s", exc.kind, exc.problem, peer and peer[0])
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(exc.reply())
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self.idle, self.request_timer):
            if timer is not None:
                timer.cancel()
        if self.admitted:
            self.admitted = False
            self.service.connections.discard(self)
            self.service.metrics.policy_connections.set(len(self.service.connections))


class PolicyService:
    """The service of [policy] listen: answers from the policy in force, as DNS does (same reloads, exceptions)."""

    name = "policy"

    def __init__(
        self,
        cfg: Config,
        current_policy: Callable[[], Policy],
        settings: Callable[[], Config],
        metrics: Metrics,
        reuse_port: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg, self.current_policy, self.settings, self.metrics = cfg, current_policy, settings, metrics
        self.reuse_port, self.clock = reuse_port, clock
        self.connections: set[PolicyConnection] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.addresses: list[tuple[str, int]] = []
        self.stopping = False
        self.declared: Policy | None = None
        self.declare(current_policy())

    def declare(self, policy: Policy) -> None:
        """Every refusal series at 0 for this policy's entries (at start and after each reload)."""
        self.metrics.declare_submission(sorted(policy.guard.protected), TYPO_CLASSES)
        self.declared = policy

    def answer(self, request: dict, transport: asyncio.Transport) -> None:
        policy, cfg = self.current_policy(), self.settings()
        if policy is not self.declared:
            self.declare(policy)
        answer = delegation.decide(request, policy, cfg.policy_mode, cfg.policy_template, self.clock())
        self.metrics.policy_requests.labels(answer.reply).inc()
        if answer.labels is not None:
            self.metrics.submission_refusals.labels(*answer.labels).inc()
        if answer.event is not None:
            emit_event({"time": timestamp(), **answer.event})
        transport.write(answer.line())

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for ep in self.cfg.policy_listen:
            family = socket.AF_INET6 if ":" in ep.host else socket.AF_INET
            try:
                server = await loop.create_server(
                    lambda: PolicyConnection(self),
                    ep.host,
                    ep.port,
                    family=family,
                    reuse_port=self.reuse_port or None,
                )
            except OSError as exc:
                raise ConfigError(f"cannot listen for the policy service on {ep}: {os_reason(exc)}") from None
            self.servers.append(server)
            port = server.sockets[0].getsockname()[1]
            self.addresses.append((ep.host, port))
            log.info("policy service listening address=%s port=%d mode=%s", ep.host, port, self.cfg.policy_mode)

    async def stop(self, grace: float) -> None:
        self.stopping = True
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        for server in self.servers:
            await server.wait_closed()
