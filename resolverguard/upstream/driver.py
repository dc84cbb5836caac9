"""The I/O under the resolutions: UDP sockets from the port pool, the one timer heap, TCP, ICMP errors.

UpstreamPool.submit(query, done) starts a Resolution (resolution.py) and carries out its actions: Send on a
random pooled socket with an ID none of that socket's exchanges has (os.urandom, in batches), Resend, Arm into
the heap, Done to the callback. Replies reach the resolution whose ID they carry; it checks source and question.
"""

from __future__ import annotations

import asyncio
import errno
import heapq
import itertools
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence

from .. import wire
from ..errors import BadUpstreamReply, ForwardingLoop, UpstreamError, UpstreamRefused
from .pool import Port, Ports, Upstream
from .resolution import RESEND, Arm, Done, Resolution, Send, Settings

log = logging.getLogger(__name__)

TICK = 0.01  # the one deadline timer fires at most this often: a retransmission is at most this late
_RECVERR = (11, 25)  # IP_RECVERR, IPV6_RECVERR: the cmsg types of an ICMP error
Result = bytes | Exception  # what a resolution ends with: the reply, or why there is none


class _Flight(Resolution):
    """A resolution and what the driver keeps for it: the callback, the socket or TCP task of its current exchange,
    its loop-detection key, and its place in the timer heap."""

    __slots__ = ("done", "port", "task", "key", "due")  # set by UpstreamPool.submit


class _Timers:
    """Every resolution's next deadline in one heap, served by one loop timer that fires at most every TICK."""

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Callable[[], float], fire: Callable) -> None:
        self.loop, self.clock, self.fire = loop, clock, fire
        self.heap: list[tuple[float, int, _Flight]] = []
        self.seq = itertools.count()
        self.handle: asyncio.TimerHandle | None = None
        self.at = float("inf")

    def schedule(self, flight: _Flight, due: float) -> None:
        flight.due = due
        heapq.heappush(self.heap, (due, next(self.seq), flight))
        if due < self.at:
            if self.handle is not None:
                self.handle.cancel()
            self.at, self.handle = due, self.loop.call_later(max(0.0, due - self.clock()), self._fire)

    def _fire(self) -> None:
        now = self.clock()
        heap = self.heap
        while heap and heap[0][0] <= now:
            due, _, flight = heapq.heappop(heap)
            if flight.due == due:  # not answered nor moved on since: expired
                flight.due = None
                self.fire(flight, now)
        self.handle, self.at = None, float("inf")
        if heap:
            self.at = max(heap[0][0], now + TICK)
            self.handle = self.loop.call_later(self.at - now, self._fire)


class UpstreamPool:
    """The upstreams, their health, and every query out to them: submit() is the task-free entry (a callback gets
    the result), resolve() its coroutine form. See resolution.Resolution for the order of tries."""

    def __init__(
        self,
        upstreams: Sequence[Upstream],
        *,
        timeout: float = 1.0,
        deadline: float = 2.5,
        randomize_case: bool = False,
        observe: Callable[[Upstream, str, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_loop: Callable[[], None] | None = None,
    ) -> None:
        if not upstreams:
            raise UpstreamError("no upstream resolvers configured")
        self.upstreams = list(upstreams)
        self.settings = Settings(timeout, deadline, randomize_case)
        self.observe = observe or (lambda upstream, result, seconds: None)
        self.on_loop = on_loop or (lambda: None)  # resolverguard_forwarding_loops_total
        self.clock = clock
        self.outgoing: dict[bytes, int] = {}  # ID + question of every query in flight upstream: loop detection
        self.loop_logged = -1e9
        self.by_address = {u.peer: u for u in self.upstreams}
        self.loop: asyncio.AbstractEventLoop | None = None  # the running loop, bound on the first query
        self._ports: dict[int, Ports] = {}
        self.timers: _Timers | None = None
        self._random, self._at = b"", 0  # os.urandom in batches: IDs and socket picks

    # ---------------------------------------------------------------- entry points

    def submit(self, query: wire.Query, done: Callable[[Result], None]) -> None:
        """Resolve query upstream; done(result) is called once, later or now: the reply re-addressed to the client,
        an UpstreamError when all upstreams fail, or any other exception (a bug, for the server to log)."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # the first query (or a new loop in tests): sockets and timer on this one
            self.loop, self._ports, self.timers = loop, {}, _Timers(loop, self.clock, self._expired)
        flight = _Flight(query, self.upstreams, self.settings, self.new_id, self.observe)
        flight.done = done
        flight.port = flight.task = flight.key = flight.due = None  # no exchange, no deadline yet
        if self.outgoing and query.data[:2] + query.data[12 : query.qend] in self.outgoing:
            self._apply(flight, (Done(ForwardingLoop()),))  # one of our own queries, back through a relay
            return
        self._step(flight, flight.start, self.clock())

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

    # ---------------------------------------------------------------- carrying out actions

    def _step(self, flight: _Flight, event: Callable, *args) -> None:
        """Feed one event to the resolution and carry out what it asks; a bug ends it with the exception."""
        try:
            self._apply(flight, event(*args))
        except Exception as exc:  # a bug: the client still gets its SERVFAIL, the server logs it
            self._end(flight)
            flight.due = None
            if not flight.over:
                flight.over = True
                flight.done(exc)

    def _apply(self, flight: _Flight, actions: tuple | None) -> None:
        """Carry out the actions (None: the datagram was not the reply, nothing to do)."""
        for action in actions or ():
            kind = type(action)
            if kind is Arm:
                self.timers.schedule(flight, action.deadline)
            elif kind is Send:
                self._end(flight)
                if not self._send(flight, action):  # failed: the resolution has moved on from it already
                    return
            elif action is RESEND:
                try:
                    flight.port.sock.sendto(flight.data, flight.upstream.peer)
                except OSError as exc:
                    self._end(flight)
                    self._apply(flight, flight.on_error(exc, self.clock()))
                    return
            else:  # Done
                self._end(flight)
                flight.due = None
                result = action.result
                if type(result) is ForwardingLoop:
                    self._looped(flight.query)
                flight.done(result)

    def _send(self, flight: _Flight, send: Send) -> bool:
        """Start the exchange; False when it failed at once (the resolution has been told)."""
        upstream, data = send.upstream, send.data
        if send.tcp:
            flight.key = self._sent_out(data, flight.query.qend)
            flight.task = task = asyncio.ensure_future(self._tcp(flight, upstream, data))
            task.add_done_callback(_retrieve)
            return True
        now = self.clock()
        try:
            port = self.ports(upstream.family).take(now, self.draw)
        except OSError as exc:
            self._apply(flight, flight.on_error(exc, now))
            return False
        exchanges = port.exchanges
        if data[:2] in exchanges:  # an ID in flight on this socket: another one
            data = flight.renumber(self.qid(exchanges))
        exchanges[data[:2]] = flight
        flight.port = port
        flight.key = self._sent_out(data, flight.query.qend)
        try:
            port.sock.sendto(data, upstream.peer)
        except OSError as exc:
            self._end(flight)
            self._apply(flight, flight.on_error(exc, now))
            return False
        return True

    def _end(self, flight: _Flight) -> None:
        """The current exchange is over: its ID freed, its socket released, its TCP task stopped."""
        port = flight.port
        if port is not None:
            qid = flight.data[:2]
            if port.exchanges.get(qid) is flight:
                del port.exchanges[qid]
            flight.port = None
            port.ports.release(port)
        if flight.task is not None:
            flight.task.cancel()
            flight.task = None
        if flight.key is not None:
            key = flight.key
            if self.outgoing[key] == 1:
                del self.outgoing[key]
            else:
                self.outgoing[key] -= 1
            flight.key = None

    def _expired(self, flight: _Flight, now: float) -> None:
        self._step(flight, flight.on_timer, now)

    def _looped(self, query: wire.Query) -> None:
        self.on_loop()
        if self.clock() - self.loop_logged > 60:
            self.loop_logged = self.clock()
            log.error(
                "forwarding loop: a query sent upstream came back qname=%s upstreams=%s (is the guard "
                "its own upstream, e.g. through resolv.conf, or another guard's?)",
                query.qname,
                ",".join(u.name for u in self.upstreams),
            )

    # ---------------------------------------------------------------- UDP in

    def ports(self, family: int) -> Ports:
        ports = self._ports.get(family)
        if ports is None:
            self._ports[family] = ports = Ports(family, self.loop, self._readable)
        return ports

    def _readable(self, port: Port) -> None:
        """Read every datagram waiting on port: each goes to the resolution its ID names."""
        sock, exchanges = port.sock, port.exchanges
        while True:
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error (IP_RECVERR): the error queue says which datagram it answers
                if not self._icmp_errors(port):
                    return
                continue
            flight = exchanges.get(data[:2])
            if flight is None:
                self._stray(addr)
                continue
            self._step(flight, flight.on_reply, data, addr, self.clock())
            if port.fd < 0:  # the exchange's end closed the socket
                return

    def _icmp_errors(self, port: Port) -> bool:
        """End the exchanges the queued ICMP errors are about: the error quotes our datagram and names its target."""
        read = False
        while True:
            try:
                quoted, ancillary, _, addr = port.sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
            except OSError:  # the queue is empty (or the socket closed)
                return read
            read = True
            flight = port.exchanges.get(quoted[:2])
            if flight is None or (addr[0], addr[1]) != flight.upstream.peer or not flight.data.startswith(quoted):
                continue
            code = next((int.from_bytes(d[:4], sys.byteorder) for _, kind, d in ancillary if kind in _RECVERR), 0)
            if code == errno.ECONNREFUSED:  # port unreachable: nothing listens there
                error: UpstreamError = UpstreamRefused(
                    f"port unreachable: {ConnectionRefusedError(code, os.strerror(code))}"
                )
            else:  # host or network unreachable and friends
                error = BadUpstreamReply(str(OSError(code, os.strerror(code))))
            self._step(flight, flight.on_error, error, self.clock())

    def _stray(self, addr: tuple) -> None:
        """A datagram with an ID in flight on none of that socket's exchanges: late or forged. From an upstream's
        address it is counted as a mismatch; from elsewhere it names no upstream and is dropped uncounted."""
        upstream = self.by_address.get((addr[0], addr[1]))
        if upstream is not None:
            self.observe(upstream, "mismatch", 0.0)

    # ---------------------------------------------------------------- TCP (rare: TC replies, TCP clients)

    async def _tcp(self, flight: _Flight, upstream: Upstream, data: bytes) -> None:
        """One TCP exchange; the first message that answers data goes to the resolution (others: mismatch)."""
        try:
            reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
        except ConnectionRefusedError:
            event = (flight.on_error, UpstreamRefused("connection refused"))
        except OSError as exc:
            event = (flight.on_error, exc)
        else:
            try:
                writer.write(wire.frame(data))
                await writer.drain()
                while True:
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    reply = await reader.readexactly(size)
                    if wire.reply_matches(reply, data, flight.query.qend):
                        event = (flight.on_reply, reply, upstream.peer)
                        break
                    self.observe(upstream, "mismatch", 0.0)
            except asyncio.IncompleteReadError:
                event = (flight.on_error, BadUpstreamReply("connection closed"))
            except OSError as exc:
                event = (flight.on_error, exc)
            finally:
                writer.close()
        flight.task = None  # over: _end must not cancel it (it is this task)
        self._step(flight, *event, self.clock())

    # ---------------------------------------------------------------- IDs and bookkeeping

    def _bytes(self, n: int) -> bytes:
        if self._at + n > len(self._random):
            self._random, self._at = os.urandom(4096), 0
        self._at += n
        return self._random[self._at - n : self._at]

    def new_id(self) -> bytes:
        """A random query ID (the socket it goes out on checks it is not in flight there)."""
        return self._bytes(2)

    def qid(self, taken: dict[bytes, object]) -> bytes:
        """A random query ID, none of those in flight on the socket."""
        while True:
            qid = self._bytes(2)
            if qid not in taken:
                return qid

    def draw(self, n: int) -> int:
        """A random index below n (n is at most PORTS: the modulo bias is nil)."""
        return int.from_bytes(self._bytes(2), "big") % n

    def _sent_out(self, sent: bytes, qend: int) -> bytes:
        """Note a query going out (its ID and question: loop detection); _end removes it."""
        key = sent[:2] + sent[12:qend]
        self.outgoing[key] = self.outgoing.get(key, 0) + 1
        return key


def _retrieve(task: asyncio.Future) -> None:
    """A cancelled TCP task ends quietly (its exchange is over); one that raised is a bug (the resolution goes on:
    its deadline is armed)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("internal error in an upstream TCP exchange", exc_info=task.exception())
