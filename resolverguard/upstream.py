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
from .errors import BadUpstreamReply, UpstreamError, UpstreamTimeout

log = logging.getLogger(__name__)


@dataclass
class Upstream:
    """One upstream resolver and what we have learnt of its health."""

    host: str
    port: int = 53
    failures: int = 0
    down_until: float = 0.0
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET


class _Exchange:
    """One UDP exchange on its own socket: the first reply that matches ID, question and source wins."""

    def __init__(self, sock: socket.socket, sent: bytes, qend: int, peer: tuple[str, int],
                 on_spoof: Callable[[str], None]) -> None:  # fmt: skip
        self.sock, self.sent, self.qend, self.peer, self.on_spoof = sock, sent, qend, peer, on_spoof
        self.future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def readable(self) -> None:
        while not self.future.done():
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP port unreachable and friends
                self.future.set_exception(BadUpstreamReply(str(exc)))
                return
            if (addr[0], addr[1]) != self.peer:
                self.on_spoof("wrong_source")
            elif not wire.reply_matches(data, self.sent, self.qend):
                self.on_spoof("mismatch")
            else:
                self.future.set_result(data)


class UpstreamPool:
    """Sends a query to the healthiest upstream first, failing over until an overall deadline."""

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

    def ranked(self) -> list[Upstream]:
        """Healthy upstreams in configured order, then the ones marked down, least recently failed first."""
        now = self.clock()
        return sorted(self.upstreams, key=lambda u: (u.down_until > now, u.down_until))

    async def resolve(self, query: wire.Query) -> bytes:
        """The upstream reply to query, re-addressed to the client; raises UpstreamError when all fail."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.deadline
        last: UpstreamError = UpstreamTimeout("no upstream answered")
        for upstream in self.ranked():
            remaining = end - loop.time()
            if remaining <= 0.01:
                break
            started = self.clock()
            try:
                reply = await asyncio.wait_for(self._exchange(upstream, query), min(self.timeout, remaining))
            except TimeoutError:  # asyncio.TimeoutError is TimeoutError since 3.11
                last = UpstreamTimeout(upstream.name)
                self._failed(upstream, "timeout", started)
                continue
            except UpstreamError as exc:
                last = exc
                self._failed(upstream, "error", started)
                continue
            except OSError as exc:
                last = BadUpstreamReply(f"{upstream.name}: {exc}")
                self._failed(upstream, "error", started)
                continue
            upstream.failures, upstream.down_until = 0, 0.0
            self.observe(upstream, rcode_name(reply[3] & 0xF), self.clock() - started)
            return wire.with_id_and_question(reply, query)
        raise last

    def _failed(self, upstream: Upstream, kind: str, started: float) -> None:
        upstream.failures += 1
        upstream.down_until = self.clock() + min(30.0, 0.5 * 2 ** min(upstream.failures, 6))
        self.observe(upstream, kind, self.clock() - started)
        log.debug("upstream failed upstream=%s kind=%s failures=%d", upstream.name, kind, upstream.failures)

    def spoof(self, upstream: Upstream) -> Callable[[str], None]:
        return lambda kind: self.observe(upstream, kind, 0.0)

    async def _exchange(self, upstream: Upstream, query: wire.Query) -> bytes:
        sent = self._outgoing(query)
        if not query.tcp:
            reply = await self._udp(upstream, sent, query.qend)
            if not reply[2] & 0x02:  # TC clear: done; else retry over TCP
                return reply
        return await self._tcp(upstream, sent, query.qend)

    def _outgoing(self, query: wire.Query) -> bytes:
        """The query as sent upstream: a fresh random ID and, optionally, 0x20 case randomisation."""
        qid = secrets.randbits(16).to_bytes(2, "big")
        question = query.data[12 : query.qend]
        if self.randomize_case:  # the name only: QTYPE 65 (HTTPS) is the octets 0x00 0x41, an "A"
            name, tail = question[:-4], question[-4:]
            bits = secrets.randbits(len(name))
            question = bytes(
                c ^ 0x20 if 0x61 <= (c | 0x20) <= 0x7A and (bits >> i) & 1 else c for i, c in enumerate(name)
            ) + tail
        return qid + query.data[2:12] + question + query.data[query.qend :]

    async def _udp(self, upstream: Upstream, sent: bytes, qend: int) -> bytes:
        # A plain non-blocking socket per exchange (a fresh random source port, as a transport would have):
        # about a third of the cost of create_datagram_endpoint, the largest item of a cache miss.
        loop = asyncio.get_running_loop()
        peer = (upstream.host, upstream.port)
        sock = socket.socket(upstream.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(("::", 0) if upstream.family == socket.AF_INET6 else ("0.0.0.0", 0))
            exchange = _Exchange(sock, sent, qend, peer, self.spoof(upstream))
            sock.sendto(sent, peer)
            loop.add_reader(sock.fileno(), exchange.readable)
            try:
                return await exchange.future
            finally:
                loop.remove_reader(sock.fileno())
        finally:
            sock.close()

    async def _tcp(self, upstream: Upstream, sent: bytes, qend: int) -> bytes:
        reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
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
