"""Exchanges with upstream resolvers without a task per query: callbacks on a pool of UDP sockets with random,
rotated source ports, replies matched by ID, question and source, one timer for every deadline; retransmission,
failover, TC→TCP (a coroutine: rare), health."""

from __future__ import annotations

import asyncio
import errno
import heapq
import itertools
import logging
import os
import secrets
import socket
import sys
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
# Upstream UDP sockets per address family (Unbound's outgoing-range, small): while the pool is busy a query
# shares one of PORTS open sockets; each is retired after PORT_USES queries or PORT_AGE seconds and replaced by
# a fresh one on another OS-chosen random port; when the loop goes idle with nothing in flight they all close,
# so a quiet guard still sends each query from a port of its own.
PORTS, PORT_USES, PORT_AGE = 16, 100, 5.0
TICK = 0.01  # the one deadline timer fires at most this often: a retransmission is at most this late

Result = bytes | Exception  # what an exchange or a resolution ends with: the reply, or why there is none


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
    """One UDP query in flight: the first reply from the upstream's address with our ID, QR and question wins.

    settle(result) is called once with the reply or an UpstreamError. Without settle the exchange has a socket
    of its own, read by readable(), and its outcome is ``future``.
    """

    __slots__ = ("sock", "sent", "qend", "peer", "on_spoof", "settle", "future")

    def __init__(
        self,
        sock: socket.socket,
        sent: bytes,
        qend: int,
        peer: tuple[str, int],
        on_spoof: Callable[[str], None],
        settle: Callable[[Result], None] | None = None,
    ) -> None:
        self.sock, self.sent, self.qend, self.peer, self.on_spoof = sock, sent, qend, peer, on_spoof
        if settle is None:
            self.future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            settle = self._to_future
        self.settle = settle

    def _to_future(self, result: Result) -> None:
        if isinstance(result, Exception):
            self.future.set_exception(result)
        else:
            self.future.set_result(result)

    def matches(self, data: bytes, addr: tuple) -> bool:
        """Is data (which carries our ID) the reply? If not, it is counted as a spoof."""
        if (addr[0], addr[1]) != self.peer:
            self.on_spoof("wrong_source")
        elif not wire.reply_matches(data, self.sent, self.qend):
            self.on_spoof("mismatch")
        else:
            return True
        return False

    def readable(self) -> None:
        if not self.future.done():
            _receive(self.sock, {self.sent[:2]: self}, self._stray)

    def _stray(self, addr: tuple) -> None:
        self.on_spoof("mismatch" if (addr[0], addr[1]) == self.peer else "wrong_source")


def _receive(sock: socket.socket, exchanges: dict[bytes, _Exchange], stray: Callable[[tuple], None]) -> None:
    """Read every datagram waiting on sock: each goes to the exchange its ID names, or to stray (no such ID)."""
    while True:
        try:
            data, addr = sock.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # an ICMP error (IP_RECVERR): the error queue says which datagram it answers
            if not _icmp_errors(sock, exchanges):
                return
            continue
        exchange = exchanges.get(data[:2])
        if exchange is None:
            stray(addr)
        elif exchange.matches(data, addr):
            del exchanges[data[:2]]
            exchange.settle(data)
            if sock.fileno() < 0:  # the exchange's end closed the socket
                return


def _icmp_errors(sock: socket.socket, exchanges: dict[bytes, _Exchange]) -> bool:
    """End the exchanges the queued ICMP errors are about: the error quotes our datagram and names its target."""
    read = False
    while True:
        try:
            quoted, ancillary, _, addr = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
        except OSError:  # the queue is empty (or the socket closed)
            return read
        read = True
        exchange = exchanges.get(quoted[:2])
        if exchange is None or (addr[0], addr[1]) != exchange.peer or not exchange.sent.startswith(quoted):
            continue
        code = next((int.from_bytes(d[:4], sys.byteorder) for _, kind, d in ancillary if kind in _RECVERR), 0)
        del exchanges[quoted[:2]]
        error = OSError(code, os.strerror(code))
        if code == errno.ECONNREFUSED:  # port unreachable: nothing listens there
            exchange.settle(UpstreamRefused(f"port unreachable: {ConnectionRefusedError(code, os.strerror(code))}"))
        else:  # host or network unreachable and friends
            exchange.settle(BadUpstreamReply(str(error)))


_RECVERR = (_IP_RECVERR, _IPV6_RECVERR)


class _Port:
    """A UDP socket on an OS-chosen random port, shared by the exchanges in flight on it (told apart by ID)."""

    __slots__ = ("sock", "fd", "exchanges", "uses", "born", "ports")

    def __init__(self, ports: _Ports, now: float) -> None:
        sock = socket.socket(ports.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            v6 = ports.family == socket.AF_INET6
            sock.setsockopt(socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP, _IPV6_RECVERR if v6 else _IP_RECVERR, 1)
            sock.bind(("::", 0) if v6 else ("0.0.0.0", 0))
        except OSError:
            sock.close()
            raise
        self.sock, self.fd, self.ports = sock, sock.fileno(), ports
        self.exchanges: dict[bytes, _Exchange] = {}
        self.uses, self.born = 0, now
        ports.loop.add_reader(self.fd, self.readable)

    def readable(self) -> None:
        _receive(self.sock, self.exchanges, self.ports.stray)

    def close(self) -> None:
        if self.fd >= 0:
            self.ports.loop.remove_reader(self.fd)
            self.sock.close()
            self.fd = -1


class _Ports:
    """The upstream UDP sockets of one address family; see PORTS."""

    def __init__(self, family: int, loop: asyncio.AbstractEventLoop, stray: Callable[[tuple], None]) -> None:
        self.family, self.loop, self.stray = family, loop, stray
        self.live: list[_Port] = []  # sockets taking new queries
        self.inflight = 0
        self.checking = False

    def take(self, now: float, draw: Callable[[int], int]) -> _Port:
        """The socket for one more exchange: a fresh one until PORTS are open, then a random open one."""
        live = self.live
        if len(live) < PORTS:
            port = _Port(self, now)
            live.append(port)
        else:
            port = live[draw(len(live))]
        port.uses += 1
        if port.uses >= PORT_USES or now - port.born >= PORT_AGE:
            live.remove(port)  # retired: this exchange is its last; closed when it is over
        self.inflight += 1
        return port

    def release(self, port: _Port) -> None:
        """An exchange on port is over (its entry already gone from port.exchanges)."""
        self.inflight -= 1
        if not port.exchanges and port not in self.live:
            port.close()
        if not self.inflight and not self.checking:
            self.checking = True
            self.loop.call_soon(self._idle, 2)

    def _idle(self, hops: int) -> None:
        """Nothing in flight for `hops` turns of the loop, its I/O included: the guard is quiet, close every socket."""
        if self.inflight:
            self.checking = False
        elif hops > 1:
            self.loop.call_soon(self._idle, hops - 1)
        else:
            self.checking = False
            for port in self.live:
                port.close()
            self.live.clear()


class _Timers:
    """Every resolution's next deadline in one heap, served by one loop timer that fires at most every TICK."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.heap: list[tuple[float, int, _Resolution]] = []
        self.seq = itertools.count()
        self.handle: asyncio.TimerHandle | None = None
        self.at = float("inf")

    def schedule(self, resolution: _Resolution, due: float) -> None:
        resolution.due = due
        heapq.heappush(self.heap, (due, next(self.seq), resolution))
        if due < self.at:
            if self.handle is not None:
                self.handle.cancel()
            self.at, self.handle = due, self.loop.call_at(due, self._fire)

    def _fire(self) -> None:
        now = self.loop.time()
        heap = self.heap
        while heap and heap[0][0] <= now:
            due, _, resolution = heapq.heappop(heap)
            if resolution.due == due:  # not answered nor moved on since: expired
                resolution.due = None
                resolution.expired(now)
        self.handle, self.at = None, float("inf")
        if heap:
            self.at = max(heap[0][0], now + TICK)
            self.handle = self.loop.call_at(self.at, self._fire)


class _Resolution:
    """One client query's way through the upstreams (tries, retransmissions, failover) as callbacks.

    Each try waits the upstream's adaptive timeout (measured RTT, capped at `timeout`). With one upstream the
    same datagram is sent again from the same socket with the wait doubled, so a late reply to the first still
    counts; with several, the next upstream is tried, then the next round with doubled waits. done(result) is
    called exactly once: the reply re-addressed to the client, an UpstreamError, or any other exception (a bug).
    """

    __slots__ = (
        "pool", "query", "done", "end", "ranked", "alone", "given_up", "attempt", "last", "upstream", "started",
        "edns", "budget", "key", "port", "exchange", "first", "try_end", "wait", "sends", "due", "task", "over",
    )  # fmt: skip

    def __init__(self, pool: UpstreamPool, query: wire.Query, done: Callable[[Result], None]) -> None:
        self.pool, self.query, self.done = pool, query, done
        self.end = pool.loop.time() + pool.deadline
        self.ranked = pool.ranked()
        self.alone = len(self.ranked) == 1
        self.given_up: set[int] = set()  # refused: asking again within this query would get the same
        self.attempt = -1
        self.last: UpstreamError = UpstreamTimeout("no upstream answered")
        self.upstream: Upstream | None = None
        self.key: bytes | None = None  # ID + question while our query is out: loop detection
        self.port: _Port | None = None
        self.exchange: _Exchange | None = None
        self.due: float | None = None
        self.task: asyncio.Future | None = None
        self.over = False

    def next_try(self) -> None:
        pool = self.pool
        while True:
            self.attempt += 1
            live = [u for u in self.ranked if id(u) not in self.given_up]
            remaining = self.end - pool.loop.time()
            if self.attempt >= 64 or not live or remaining <= 0.01:
                self.finish(self.last)
                return
            upstream = live[self.attempt % len(live)]
            wait = min(upstream.rto(pool.timeout) * 2 ** (self.attempt // len(live)), pool.timeout)
            self.upstream, self.started, self.edns = upstream, pool.clock(), True
            self.send(remaining if self.alone else min(wait, remaining))
            return

    def send(self, budget: float) -> None:
        """One exchange with self.upstream: UDP on a pooled socket, or TCP for a TCP client."""
        pool, query, upstream = self.pool, self.query, self.upstream
        self.budget = budget
        if query.tcp:
            self.key = pool.sent_out(sent := pool.outgoing_query(query, pool.qid(None), self.edns), query.qend)
            self.tcp(sent)
            return
        ports = pool.ports(upstream.family)
        now = pool.loop.time()
        try:
            port = ports.take(now, pool.draw)
        except OSError as exc:
            self.failed(exc)
            return
        qid = pool.qid(port.exchanges)
        sent = pool.outgoing_query(query, qid, self.edns)
        self.key = pool.sent_out(sent, query.qend)
        peer = (upstream.host, upstream.port)
        exchange = _Exchange(port.sock, sent, query.qend, peer, pool.spoofs[id(upstream)], self.udp_done)
        port.exchanges[qid] = exchange
        self.port, self.exchange = port, exchange
        try:
            port.sock.sendto(sent, peer)
        except OSError as exc:
            self.udp_over()
            self.failed(exc)
            return
        self.first, self.try_end = now, now + budget
        self.wait, self.sends = upstream.rto(pool.timeout), 1
        pool.timers.schedule(self, min(now + self.wait, self.try_end))

    def udp_over(self) -> None:
        """The UDP exchange is over: its ID freed, its socket released, its deadline dropped."""
        port, exchange = self.port, self.exchange
        if port is not None:
            if port.exchanges.get(exchange.sent[:2]) is exchange:
                del port.exchanges[exchange.sent[:2]]
            self.port = self.exchange = None
            self.due = None
            port.ports.release(port)

    def expired(self, now: float) -> None:
        """The timer: retransmit the same datagram (a late reply to the first still counts), or give the try up."""
        try:
            if self.try_end - now <= 0.01:
                self.udp_over()
                self.failed(UpstreamTimeout(self.upstream.name))
                return
            try:
                self.port.sock.sendto(self.exchange.sent, self.exchange.peer)
            except OSError as exc:
                self.udp_over()
                self.failed(exc)
                return
            self.sends, self.wait = self.sends + 1, min(self.wait * 2, self.pool.timeout)
            self.pool.timers.schedule(self, min(now + self.wait, self.try_end))
        except Exception as exc:  # a bug: the client still gets its SERVFAIL, the server logs it
            self.crash(exc)

    def udp_done(self, result: Result) -> None:
        """The exchange's reply (ID, question and source checked) or its ICMP error."""
        try:
            first, sends, sent = self.first, self.sends, self.exchange.sent
            self.udp_over()
            if isinstance(result, Exception):
                self.failed(result)
                return
            if sends == 1:  # Karn: a reply after a retransmission says nothing about the RTT
                self.upstream.sample(self.pool.loop.time() - first)
            if result[2] & 0x02:  # TC: the same question again over TCP
                self.tcp(sent)
            else:
                self.answered(result)
        except Exception as exc:
            self.crash(exc)

    def tcp(self, sent: bytes) -> None:
        pool = self.pool
        self.task = asyncio.ensure_future(
            asyncio.wait_for(pool._tcp(self.upstream, sent, self.query.qend), max(0.05, self.budget))
        )
        self.task.add_done_callback(self.tcp_done)

    def tcp_done(self, task: asyncio.Future) -> None:
        try:
            self.task = None
            if task.cancelled():
                self.finish(UpstreamTimeout(self.upstream.name))
            elif task.exception() is not None:
                self.failed(task.exception())
            else:
                self.answered(task.result())
        except Exception as exc:
            self.crash(exc)

    def answered(self, reply: bytes) -> None:
        pool, query, upstream = self.pool, self.query, self.upstream
        self.sent_back()
        rcode = reply[3] & 0xF
        if self.edns and rcode in (wire.FORMERR, wire.NOTIMP) and query.edns:  # no EDNS there: ask plainly
            pool.observe(upstream, rcode_name(rcode), pool.clock() - self.started)
            self.edns = False
            self.send(max(0.05, self.end - pool.loop.time()))
            return
        pool._answered(upstream)
        pool.observe(upstream, rcode_name(rcode), pool.clock() - self.started)
        if rcode == wire.REFUSED:  # a forwarder's reason to fail over, not an answer for the client
            self.last = UpstreamRefused(f"{upstream.name}: REFUSED")
            self.given_up.add(id(upstream))
            self.next_try()
            return
        self.finish(wire.with_id_and_question(wire.with_question(reply, query.data[12 : query.qend]), query))

    def failed(self, exc: BaseException) -> None:
        """This try failed: note it against the upstream and go on with the next."""
        self.sent_back()
        upstream = self.upstream
        if isinstance(exc, UpstreamTimeout | TimeoutError):  # asyncio.TimeoutError is TimeoutError since 3.11
            self.last, kind = UpstreamTimeout(upstream.name), "timeout"
        elif isinstance(exc, UpstreamRefused):
            self.last, kind = UpstreamRefused(f"{upstream.name}: {exc}"), "refused"
            self.given_up.add(id(upstream))
        elif isinstance(exc, UpstreamError):
            self.last, kind = exc, "error"
        elif isinstance(exc, OSError):
            self.last, kind = BadUpstreamReply(f"{upstream.name}: {exc}"), "error"
        else:
            raise exc
        self.pool._failed(upstream, kind, self.started)
        self.next_try()

    def sent_back(self) -> None:
        """Our query is no longer out: a client query with its ID and question is no loop any more."""
        if self.key is not None:
            self.pool.sent_in(self.key)
            self.key = None

    def crash(self, exc: Exception) -> None:
        self.udp_over()
        self.sent_back()
        if self.task is not None:
            self.task.cancel()
        self.finish(exc)

    def finish(self, result: Result) -> None:
        if not self.over:
            self.over = True
            self.done(result)


class UpstreamPool:
    """The upstreams, their health, and every query out to them: submit() is the task-free entry (a callback gets
    the result), resolve() its coroutine form. See _Resolution for the order of tries."""

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
        self.spoofs = {id(u): self.spoof(u) for u in self.upstreams}
        self.by_address = {(u.host, u.port): self.spoofs[id(u)] for u in self.upstreams}
        self.loop: asyncio.AbstractEventLoop | None = None  # the running loop, bound on the first query
        self._ports: dict[int, _Ports] = {}
        self.timers: _Timers | None = None
        self._random, self._at = b"", 0  # os.urandom in batches: IDs and socket picks

    def ranked(self) -> list[Upstream]:
        """Healthy upstreams in configured order, then the ones marked down, least recently failed first."""
        now = self.clock()
        return sorted(self.upstreams, key=lambda u: (u.down_until > now, u.down_until))

    def looped(self, query: wire.Query) -> bool:
        """Is this client query one the guard itself sent upstream? (the guard is, via some path, its own upstream)"""
        return bool(self.outgoing) and query.data[:2] + query.data[12 : query.qend] in self.outgoing

    def submit(self, query: wire.Query, done: Callable[[Result], None]) -> None:
        """Resolve query upstream; done(result) is called once, later or now: the reply re-addressed to the client,
        an UpstreamError when all upstreams fail, or any other exception (a bug, for the server to log)."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # the first query (or a new loop in tests): sockets and timer on this one
            self.loop, self._ports, self.timers = loop, {}, _Timers(loop)
        if self.looped(query):
            if self.clock() - self.loop_logged > 60:
                self.loop_logged = self.clock()
                log.error(
                    "forwarding loop: a query sent upstream came back qname=%s upstreams=%s (is the guard "
                    "its own upstream, e.g. through resolv.conf?)",
                    query.qname,
                    ",".join(u.name for u in self.upstreams),
                )
            done(ForwardingLoop())
            return
        resolution = _Resolution(self, query, done)
        try:
            resolution.next_try()
        except Exception as exc:
            resolution.crash(exc)

    async def resolve(self, query: wire.Query) -> bytes:
        """The upstream reply to query, re-addressed to the client; raises UpstreamError when all fail."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def settle(result: Result) -> None:
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

        self.submit(query, settle)
        return await future

    def ports(self, family: int) -> _Ports:
        ports = self._ports.get(family)
        if ports is None:
            self._ports[family] = ports = _Ports(family, self.loop, self.stray)
        return ports

    def stray(self, addr: tuple) -> None:
        """A datagram with an ID in flight on none of that socket's exchanges: late or forged. From an upstream's
        address it is counted as a mismatch; from elsewhere it names no upstream and is dropped uncounted."""
        spoof = self.by_address.get((addr[0], addr[1]))
        if spoof is not None:
            spoof("mismatch")

    def _bytes(self, n: int) -> bytes:
        if self._at + n > len(self._random):
            self._random, self._at = os.urandom(4096), 0
        self._at += n
        return self._random[self._at - n : self._at]

    def qid(self, taken: dict[bytes, _Exchange] | None) -> bytes:
        """A random query ID, none of those in flight on the socket."""
        while True:
            qid = self._bytes(2)
            if taken is None or qid not in taken:
                return qid

    def draw(self, n: int) -> int:
        """A random index below n (n is at most PORTS: the modulo bias is nil)."""
        return int.from_bytes(self._bytes(2), "big") % n

    def sent_out(self, sent: bytes, qend: int) -> bytes:
        """Note a query going out (its ID and question: loop detection); sent_in(key) when it is back."""
        key = sent[:2] + sent[12:qend]
        self.outgoing[key] = self.outgoing.get(key, 0) + 1
        return key

    def sent_in(self, key: bytes) -> None:
        if self.outgoing[key] == 1:
            del self.outgoing[key]
        else:
            self.outgoing[key] -= 1

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

    def outgoing_query(self, query: wire.Query, qid: bytes, edns: bool) -> bytes:
        """The query as sent upstream: a random ID, our own OPT and, optionally, 0x20 case randomisation."""
        question = query.data[12 : query.qend]
        if self.randomize_case:  # the name only: QTYPE 65 (HTTPS) is the octets 0x00 0x41, an "A"
            name, tail = question[:-4], question[-4:]
            bits = secrets.randbits(len(name))
            question = (
                bytes(c ^ 0x20 if 0x61 <= (c | 0x20) <= 0x7A and (bits >> i) & 1 else c for i, c in enumerate(name))
                + tail
            )
        return wire.upstream_query(query, qid, question, edns)

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
