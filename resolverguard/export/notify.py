"""NOTIFY (RFC 1996) of a new export serial to the configured secondaries, retried with back-off until acked."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from ..config import Endpoint

log = logging.getLogger(__name__)
FIRST_WAIT = 1.0  # seconds for the first answer; doubled on every retry
MAX_WAIT = 60.0


def notify_message(origin: dns.name.Name, soa_text: str | None = None) -> dns.message.Message:
    """A NOTIFY for origin's SOA, optionally carrying the new SOA in the answer section (RFC 1996 §3.7)."""
    message = dns.message.make_query(origin, dns.rdatatype.SOA)
    message.flags = dns.flags.AA  # no RD; the opcode lives in the flags too, so set it after
    message.set_opcode(dns.opcode.NOTIFY)
    if soa_text is not None:
        rrset = message.find_rrset(message.answer, origin, dns.rdataclass.IN, dns.rdatatype.SOA, create=True)
        rrset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA, soa_text), 300)
    return message


def is_ack(message: dns.message.Message, reply: dns.message.Message) -> bool:
    return reply.opcode() == dns.opcode.NOTIFY and reply.rcode() == dns.rcode.NOERROR and message.is_response(reply)


class Notifier:
    """One task per secondary; a newer serial replaces the task still retrying an older one."""

    def __init__(
        self,
        origin: dns.name.Name,
        secondaries: Sequence[Endpoint],
        soa_text: Callable[[int], str],
        acked: Callable[[str, int], None],
    ) -> None:
        self.origin = origin
        self.secondaries = list(secondaries)
        self.soa_text = soa_text
        self.acked = acked
        self.tasks: dict[str, asyncio.Task] = {}

    def changed(self, serial: int) -> None:
        for secondary in self.secondaries:
            name = str(secondary)
            old = self.tasks.pop(name, None)
            if old is not None:
                old.cancel()
            self.tasks[name] = asyncio.ensure_future(self._notify(secondary, serial))

    def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()

    async def _notify(self, secondary: Endpoint, serial: int) -> None:
        wait = FIRST_WAIT
        attempt = 0
        while True:
            attempt += 1
            message = notify_message(self.origin, self.soa_text(serial))
            try:
                reply = await dns.asyncquery.udp(
                    message, secondary.host, timeout=wait, port=secondary.port, ignore_unexpected=True
                )
                if is_ack(message, reply):
                    log.info("notify acknowledged secondary=%s serial=%d attempts=%d", secondary, serial, attempt)
                    self.acked(str(secondary), serial)
                    return
                log.warning(
                    "notify not acknowledged secondary=%s serial=%d rcode=%s",
                    secondary,
                    serial,
                    dns.rcode.to_text(reply.rcode()),
                )
                await asyncio.sleep(wait)
            except (dns.exception.DNSException, OSError) as exc:
                log.warning(
                    "notify failed secondary=%s serial=%d attempt=%d error=%s",
                    secondary,
                    serial,
                    attempt,
                    type(exc).__name__,
                )
                if isinstance(exc, OSError):
                    await asyncio.sleep(wait)
            wait = min(wait * 2, MAX_WAIT)
