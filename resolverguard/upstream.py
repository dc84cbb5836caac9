"""Async exchange with upstream resolvers: fresh ID and port, reply matching, TC→TCP, timeout, failover, health."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import wire
from .codes import rcode_name
from .errors import BadUpstreamReply, ForwardingLoop, UpstreamError, UpstreamRefused, UpstreamTimeout

log = logging.getLogger(__name__)


INITIAL_RTO = 0.376  # an upstream we have not timed yet (Unbound's infra cache starts there too)
MIN_RTO = 0.2  # a forwarder's upstream resolves on a miss: never retransmit faster than this
_IP_RECVERR, _IPV6_RECVERR = 11, 25  # Linux: ICMP errors reach an unconnected UDP socket (not in `socket`)


@dataclass
class Upstream:
    """One upstream resolver and what we have learnt of it: health and round-trip time (RFC 6298 estimator)."""

    host: str
    port: int = 53
    failures: int = 0
    down_until: float = 0.0
    srtt: float | None = None
    rttvar: float = 0.0
    up: bool | None = None  # None: no exchange yet
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def rto(self, cap: float) -> float:
        """How long to wait for this upstream before retransmitting or failing over."""
        if self.srtt is None:
            return min(cap, INITIAL_RTO)
        return max(MIN_RTO, min(cap, self.srtt + 4 * self.rttvar))

    def sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt


class _Exchange:
    """One UDP exchange on its own socket: the first reply that matches ID, question and source wins."""

    def __init__(
        self, sock: socket.socket, sent: bytes, qend: int, peer: tuple[str, int], on_spoof: Callable[[str], None]
    ) -> None:
        self.sock, self.sent, self.qend, self.peer, self.on_spoof = sock, sent, qend, peer, on_spoof
        self.future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def readable(self) -> None:
        while not self.future.done():
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError as exc:  # ICMP port unreachable: nothing listens there
                self.future.set_exception(UpstreamRefused(f"port unreachable: {exc}"))
                return
            except OSError as exc:  # host or network unreachable and friends
                self.future.set_exception(BadUpstreamReply(str(exc)))
                return
            if (addr[0], addr[1]) != self.peer:
                self.on_spoof("wrong_source")
            elif not wire.reply_matches(data, self.sent, self.qend):
                self.on_spoof("mismatch")
            else:
                self.future.set_result(data)


class UpstreamPool:
    """Sends a query to the healthiest upstream first, retransmitting and failing over until an overall deadline.

    Each try waits the upstream's adaptive timeout (measured RTT, capped at `timeout`). With one upstream the
    same datagram is sent again from the same socket with the wait doubled, so a late reply to the first still
    counts; with several, the next upstream is tried, then the next round with doubled waits.
    """

    def __init__(
        self,
        upstreams: Sequence[Upstream],
        *,
        timeout: float = 1.0,
        deadline: float = 2.5,
        randomize_case: bool = False,
        observe: Callable[[Upstream, str, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not upstreams:
            raise UpstreamError("no upstream resolvers configured")
        self.upstreams = list(upstreams)
        self.timeout, self.deadline, self.randomize_case = timeout, deadline, randomize_case
        self.observe = observe or (lambda upstream, result, seconds: None)
        self.clock = clock
        self.outgoing: dict[bytes, int] = {}  # ID + question of every query in flight upstream: loop detection
        self.loop_logged = -1e9

    def ranked(self) -> list[Upstream]:
        """Healthy upstreams in configured order, then the ones marked down, least recently failed first."""
        now = self.clock()
        return sorted(self.upstreams, key=lambda u: (u.down_until > now, u.down_until))

    def looped(self, query: wire.Query) -> bool:
        """Is this client query one the guard itself sent upstream? (the guard is, via some path, its own upstream)"""
        return bool(self.outgoing) and query.data[:2] + query.data[12 : query.qend] in self.outgoing

    async def resolve(self, query: wire.Query) -> bytes:
        """The upstream reply to query, re-addressed to the client; raises UpstreamError when all fail."""
        if self.looped(query):
            if self.clock() - self.loop_logged > 60:
                self.loop_logged = self.clock()
                log.error(
                    "forwarding loop: a query sent upstream came back qname=%s upstreams=%s (is the guard "
                    "its own upstream, e.g. through resolv.conf?)",
                    query.qname,
                    ",".join(u.name for u in self.upstreams),
                )
            raise ForwardingLoop()
        loop = asyncio.get_running_loop()
        end = loop.time() + self.deadline
        last: UpstreamError = UpstreamTimeout("no upstream answered")
        ranked = self.ranked()
        alone = len(ranked) == 1
        given_up: set[int] = set()  # refused: asking again within this query would get the same
        for attempt in range(64):
            live = [u for u in ranked if id(u) not in given_up]
            if not live:
                break
            upstream = live[attempt % len(live)]
            remaining = end - loop.time()
            if remaining <= 0.01:
                break
            wait = min(upstream.rto(self.timeout) * 2 ** (attempt // len(live)), self.timeout)
            budget = remaining if alone else min(wait, remaining)
            started = self.clock()
            try:
                reply = await self._exchange(upstream, query, budget, edns=True)
                rcode = reply[3] & 0xF
                if rcode in (wire.FORMERR, wire.NOTIMP) and query.edns:  # an upstream without EDNS: ask plainly
                    self.observe(upstream, rcode_name(rcode), self.clock() - started)
                    reply = await self._exchange(upstream, query, max(0.05, end - loop.time()), edns=False)
                    rcode = reply[3] & 0xF
            except (TimeoutError, UpstreamTimeout):  # asyncio.TimeoutError is TimeoutError since 3.11
                last = UpstreamTimeout(upstream.name)
                self._failed(upstream, "timeout", started)
                continue
            except UpstreamRefused as exc:
                last = UpstreamRefused(f"{upstream.name}: {exc}")
                given_up.add(id(upstream))
                self._failed(upstream, "refused", started)
                continue
            except UpstreamError as exc:
                last = exc
                self._failed(upstream, "error", started)
                continue
            except OSError as exc:
                last = BadUpstreamReply(f"{upstream.name}: {exc}")
                self._failed(upstream, "error", started)
                continue
            self._answered(upstream)
            self.observe(upstream, rcode_name(rcode), self.clock() - started)
            if rcode == wire.REFUSED:  # a forwarder's reason to fail over, not an answer for the client
                last = UpstreamRefused(f"{upstream.name}: REFUSED")
                given_up.add(id(upstream))
                continue
            return wire.with_id_and_question(
                wire.clean_reply(wire.with_question(reply, query.data[12 : query.qend]), query.flags & wire.CD), query
            )
        raise last

    def _answered(self, upstream: Upstream) -> None:
        upstream.failures, upstream.down_until = 0, 0.0
        if upstream.up is False:
            log.warning("upstream up again upstream=%s", upstream.name)
        upstream.up = True

    def _failed(self, upstream: Upstream, kind: str, started: float) -> None:
        upstream.failures += 1
        upstream.down_until = self.clock() + min(30.0, 0.5 * 2 ** min(upstream.failures, 6))
        self.observe(upstream, kind, self.clock() - started)
        if upstream.up is not False:
            log.warning("upstream down upstream=%s kind=%s", upstream.name, kind)
        upstream.up = False
        log.debug("upstream failed upstream=%s kind=%s failures=%d", upstream.name, kind, upstream.failures)

    def spoof(self, upstream: Upstream) -> Callable[[str], None]:
        return lambda kind: self.observe(upstream, kind, 0.0)

    async def _exchange(self, upstream: Upstream, query: wire.Query, budget: float, *, edns: bool) -> bytes:
        sent = self._outgoing(query, edns)
        key = sent[:2] + sent[12 : query.qend]
        self.outgoing[key] = self.outgoing.get(key, 0) + 1
        try:
            if not query.tcp:
                reply = await self._udp(upstream, sent, query.qend, budget)
                if not reply[2] & 0x02:  # TC clear: done; else retry over TCP
                    return reply
            return await asyncio.wait_for(self._tcp(upstream, sent, query.qend), max(0.05, budget))
        finally:
            if self.outgoing[key] == 1:
                del self.outgoing[key]
            else:
                self.outgoing[key] -= 1

    def _outgoing(self, query: wire.Query, edns: bool) -> bytes:
        """The query as sent upstream: a fresh random ID, our own OPT and, optionally, 0x20 case randomisation."""
        qid = secrets.randbits(16).to_bytes(2, "big")
        question = query.data[12 : query.qend]
        if self.randomize_case:  # the name only: QTYPE 65 (HTTPS) is the octets 0x00 0x41, an "A"
            name, tail = question[:-4], question[-4:]
            bits = secrets.randbits(len(name))
            question = (
                bytes(c ^ 0x20 if 0x61 <= (c | 0x20) <= 0x7A and (bits >> i) & 1 else c for i, c in enumerate(name))
                + tail
            )
        return wire.upstream_query(query, qid, question, edns)

    async def _udp(self, upstream: Upstream, sent: bytes, qend: int, budget: float) -> bytes:
        # A plain non-blocking socket per exchange (a fresh random source port, as a transport would have):
        # about a third of the cost of create_datagram_endpoint, the largest item of a cache miss.
        loop = asyncio.get_running_loop()
        peer = (upstream.host, upstream.port)
        sock = socket.socket(upstream.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            v6 = upstream.family == socket.AF_INET6
            sock.setsockopt(socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP, _IPV6_RECVERR if v6 else _IP_RECVERR, 1)
            sock.bind(("::", 0) if v6 else ("0.0.0.0", 0))
            exchange = _Exchange(sock, sent, qend, peer, self.spoof(upstream))
            sock.sendto(sent, peer)
            first = loop.time()
            end, wait, sends = first + budget, upstream.rto(self.timeout), 1
            loop.add_reader(sock.fileno(), exchange.readable)
            try:
                while True:
                    left = end - loop.time()
                    if left <= 0:
                        raise UpstreamTimeout(upstream.name)
                    try:
                        reply = await asyncio.wait_for(asyncio.shield(exchange.future), min(wait, left))
                        break
                    except TimeoutError:
                        if end - loop.time() <= 0.01:
                            raise UpstreamTimeout(upstream.name) from None
                        sock.sendto(sent, peer)  # the same datagram: a late reply to the first still counts
                        sends, wait = sends + 1, min(wait * 2, self.timeout)
                if sends == 1:  # Karn: a reply after a retransmission says nothing about the RTT
                    upstream.sample(loop.time() - first)
                return reply
            finally:
                loop.remove_reader(sock.fileno())
        finally:
            sock.close()

    async def _tcp(self, upstream: Upstream, sent: bytes, qend: int) -> bytes:
        try:
            reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
        except ConnectionRefusedError as exc:
            raise UpstreamRefused(f"{upstream.name}: connection refused") from exc
        try:
            writer.write(wire.frame(sent))
            await writer.drain()
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                reply = await reader.readexactly(size)
                if wire.reply_matches(reply, sent, qend):
                    return reply
                self.observe(upstream, "mismatch", 0.0)
        except asyncio.IncompleteReadError as exc:
            raise BadUpstreamReply(f"{upstream.name}: connection closed") from exc
        finally:
            writer.close()


def from_resolv_conf(path: str = "/etc/resolv.conf") -> list[Upstream]:
    """The nameservers of resolv.conf, the default upstreams."""
    found = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    found.append(Upstream(parts[1].split("%")[0]))
    except OSError:
        pass
    return found
