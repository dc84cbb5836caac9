"""The exported policy zone for secondaries (AXFR/IXFR over TCP, SOA probes): rendered off the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import dns.exception
import dns.message

from . import wire
from .errors import ResolverGuardError
from .export import SerialStore, axfr_response, render_policy
from .pipeline import Access
from .policy import Policy

log = logging.getLogger(__name__)
TRANSFER_QTYPES = frozenset({6, 251, 252})  # SOA, IXFR, AXFR


class ZoneExport:
    """Serves render_policy() of the policy in force under ``origin`` to the allowed clients.

    Nothing is rendered until a secondary asks; a request that finds the policy changed since the last
    rendering starts a new one in a thread, and transfers get the last complete rendering (SERVFAIL
    before the first).
    The first transfer after a change may still get the previous zone (its old serial says so); the
    serial grows on every change of content and stays put otherwise (one SerialStore per process).
    """

    def __init__(self, origin: str, clients: Sequence[str], current: Callable[[], Policy]) -> None:
        self.origin = origin.rstrip(".").lower()
        self.clients = Access(clients)
        self.current = current
        self.serials = SerialStore()
        self.text: str | None = None
        self.rendered: Policy | None = None
        self.rendering: asyncio.Task | None = None

    def answer(self, query: wire.Query) -> list[bytes] | None:
        """Replies for a transfer or SOA query of the export origin; None for every other query."""
        if query.qtype not in TRANSFER_QTYPES or query.qname != self.origin:  # qtype first: qname is decoded lazily
            return None
        if query.qtype != 6 and not query.tcp:
            return None  # a transfer over UDP: the pipeline refuses it
        if not self.clients.allowed(query.client):
            return [wire.reply_for(query, wire.REFUSED)]
        self._refresh()
        if self.text is None:
            return [wire.reply_for(query, wire.SERVFAIL)]
        try:
            message = dns.message.from_wire(query.data)
        except dns.exception.DNSException:
            return [wire.error_reply(query.data, wire.FORMERR)]
        return axfr_response(message, self.text, self.origin + ".")

    def _refresh(self) -> None:
        policy = self.current()
        if policy is self.rendered or (self.rendering is not None and not self.rendering.done()):
            return
        self.rendering = asyncio.ensure_future(self._render(policy))

    async def _render(self, policy: Policy) -> None:
        try:
            text = await asyncio.to_thread(render_policy, policy, origin=self.origin + ".", serials=self.serials)
        except ResolverGuardError as exc:  # e.g. a bad export origin: keep serving the previous rendering
            log.error("rpz export failed origin=%s error=%s", self.origin, exc)
            return
        self.text, self.rendered = text, policy
        if self.current() is not policy:
            self._refresh()  # the policy changed while we rendered
