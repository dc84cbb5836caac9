"""UDP and TCP listeners: bytes in, pipeline, bytes out; errors become rcodes here, and only here."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import dns.exception

from . import wire
from .codes import Malformed, Outcome
from .errors import ResolverGuardError
from .export import TRANSFER_QTYPES
from .fastpath import BATCH, FastTable
from .metrics import Metrics
from .pipeline import Answer, Pipeline

if TYPE_CHECKING:
    from .export import ZoneExport

log = logging.getLogger(__name__)
Payload = bytes | list[bytes] | None  # one reply, an AXFR's messages, or nothing
_DROPPED = {wire.Unreadable: Malformed.UNREADABLE, wire.NotQuery: Malformed.RESPONSE}


class Server:
    """Owns the listening sockets and the in-flight forwards; records metrics once per query."""

    def __init__(
        self,
        pipeline: Pipeline,
        metrics: Metrics,
        *,
        tcp_idle_timeout: float = 10.0,
        tcp_max_connections: int = 1000,
        max_inflight: int = 10_000,
        export: ZoneExport | None = None,
        fast: FastTable | None = None,
    ) -> None:
        self.pipeline, self.metrics = pipeline, metrics
        self.tcp_idle_timeout, self.tcp_max_connections, self.max_inflight = (
            tcp_idle_timeout,
            tcp_max_connections,
            max_inflight,
        )
        self.export = export
        self.fast = fast  # remembered UDP answers; None: every datagram goes through the pipeline
        # zone transfers are built off the event loop (a 1M-rule AXFR takes a minute), one at a time
        self.transfer_slot = asyncio.Semaphore(1)
        self.inflight: set[asyncio.Task] = set()  # transfers, and forwards by a forwarder without forward()
        self.forwards = 0  # forwards in flight by callback (Forwarder.forward): no task each
        self.idle: asyncio.Future | None = None  # drain() waits on it for the last of them
        self.tcp_connections: OrderedDict[TcpConnection, None] = OrderedDict()
        self.closers: list[Callable[[], None]] = []
        self.udp_listeners: list[UdpListener] = []
        self.stopping = False
        self.addresses: list[tuple[str, int]] = []

    async def listen(self, host: str, port: int, reuse_port: bool = False) -> tuple[str, int]:
        """Listen on UDP and TCP at host:port (port 0: the same free port for both); return the address."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(20):
            udp = UdpListener(self, _bound(family, socket.SOCK_DGRAM, host, port, reuse_port))
            bound = udp.sock.getsockname()[1]
            try:
                tcp_sock = _bound(family, socket.SOCK_STREAM, host, bound, reuse_port)
                tcp = await loop.create_server(lambda: TcpConnection(self), sock=tcp_sock, backlog=1024)
            except OSError:
                udp.close()
                if port:
                    raise
                continue  # the UDP port we drew is taken over TCP: draw again
            self.closers.append(tcp.close)
            udp.start(loop)
            self.udp_listeners.append(udp)
            self.addresses.append((host, bound))
            log.info("listening address=%s port=%d transports=udp,tcp", host, bound)
            return host, bound
        raise OSError(f"no free port pair on {host}")

    def stop_listening(self) -> None:
        """Accept nothing new: close the TCP listeners, ignore new datagrams (UDP sockets stay open to reply)."""
        self.stopping = True
        for close in self.closers:
            close()
        self.closers.clear()

    async def drain(self, grace: float) -> None:
        """Wait (bounded) for in-flight forwards to finish, then close every socket."""
        waits = set(self.inflight)
        if self.forwards:
            self.idle = asyncio.get_running_loop().create_future()
            waits.add(self.idle)
        if waits:
            await asyncio.wait(waits, timeout=grace)
        for conn in list(self.tcp_connections):
            conn.transport.close()
        for udp in self.udp_listeners:
            udp.close()

    def answer(self, data: bytes, client: str, tcp: bool, send: Callable[[Payload], None]) -> None:
        """Answer one DNS message from a client; the only place where exceptions become rcodes."""
        started = time.perf_counter()
        query = None
        try:
            query = wire.parse_query(data, client, tcp)
            self.metrics.query("tcp" if tcp else "udp", query.qtype)
            if self.export is not None and query.qtype in TRANSFER_QTYPES:  # SOA, AXFR, IXFR: the export zone's?
                if self.export.is_transfer(query):  # built off the event loop
                    self._track(self._transfer(query, send, started))
                    return
                if (msgs := self.export.answer(query)) is not None:  # its SOA (or a refusal)
                    send(msgs[0])
                    self.metrics.response(Outcome.TRANSFER, msgs[0], time.perf_counter() - started)
                    return
            answer = self.pipeline.answer_now(query)
            if answer is None:
                if len(self.inflight) + self.forwards >= self.max_inflight:
                    answer = Answer(wire.reply_for(query, wire.SERVFAIL), Outcome.SERVFAIL)
                else:
                    self._forward(query, send, started)
                    return
        except wire.BadVersion:  # EDNS version > 0: BADVERS before policy and cache (RFC 6891 6.1.3)
            answer = Answer(wire.badvers_reply(data), Outcome.FORMERR)
        except (wire.Unreadable, wire.NotQuery) as exc:
            self.metrics.malformed.labels(_DROPPED[type(exc)]).inc()
            answer = Answer(None, Outcome.DROPPED)
        except ResolverGuardError as exc:
            notimp = exc.rcode_hint == wire.NOTIMP
            self.metrics.malformed.labels(Malformed.NOTIMP if notimp else Malformed.FORMERR).inc()
            answer = Answer(wire.error_reply(data, exc.rcode_hint), Outcome.NOTIMP if notimp else Outcome.FORMERR)
        except dns.exception.DNSException:  # dnspython (answers.render) read records the scan skips: malformed
            self.metrics.malformed.labels(Malformed.FORMERR).inc()
            answer = Answer(wire.error_reply(data, wire.FORMERR), Outcome.FORMERR)
        except Exception:  # the only catch-all in the package: a bug must not take the server down
            log.exception("internal error client=%s", client)
            self.metrics.internal_errors.inc()
            answer = Answer(wire.error_reply(data, wire.SERVFAIL), Outcome.SERVFAIL)
        self._send(answer, query, send, started)

    def _track(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)

    async def _transfer(self, query: wire.Query, send: Callable[[Payload], None], started: float) -> None:
        try:
            async with self.transfer_slot:
                msgs = await _in_daemon_thread(self.export.answer, query)
        except Exception:  # same rule as answer(): log, count, SERVFAIL
            log.exception("internal error in a zone transfer client=%s", query.client)
            self.metrics.internal_errors.inc()
            msgs = [wire.reply_for(query, wire.SERVFAIL)]
        send(msgs)
        self.metrics.response(Outcome.TRANSFER, msgs[0], time.perf_counter() - started)

    def _forward(self, query: wire.Query, send: Callable[[Payload], None], started: float) -> None:
        forward = getattr(self.pipeline.forwarder, "forward", None)
        if forward is None:  # a forwarder with only the coroutine resolve() (a test's stand-in): a task
            self._track(self._resolve(query, send, started))
            return
        self.forwards += 1

        def done(answer: Answer | Exception) -> None:
            self.forwards -= 1
            self._forwarded(answer, query, send, started)
            if not self.forwards and self.idle is not None and not self.idle.done():
                self.idle.set_result(None)

        forward(query, done)

    async def _resolve(self, query: wire.Query, send: Callable[[Payload], None], started: float) -> None:
        try:
            answer = await self.pipeline.forwarder.resolve(query)
        except Exception as exc:
            answer = exc
        self._forwarded(answer, query, send, started)

    def _forwarded(
        self, answer: Answer | Exception, query: wire.Query, send: Callable[[Payload], None], started: float
    ) -> None:
        if not isinstance(answer, Answer):  # same rule as answer(): log, count, SERVFAIL
            log.error("internal error while forwarding qname=%s", query.qname, exc_info=answer)
            self.metrics.internal_errors.inc()
            answer = Answer(wire.reply_for(query, wire.SERVFAIL), Outcome.SERVFAIL)
        self._send(answer, query, send, started)

    def _send(self, answer: Answer, query: wire.Query | None, send: Callable[[Payload], None], started: float) -> None:
        reply = answer.reply
        if reply is not None and query is not None and not query.tcp:
            reply = wire.fit_udp(reply, query)
            if answer.fresh_for > 0 and query.memo and self.fast is not None:
                renew = answer.renew if reply is answer.reply else None  # cut to fit: the TTL offsets moved
                self.fast.remember(query, reply, answer.outcome, answer.fresh_for, answer.slots, renew, answer.event)
        send(reply)  # exactly once per message received; None: nothing goes out
        self.metrics.response(answer.outcome, reply, time.perf_counter() - started)


def _bound(family: int, kind: int, host: str, port: int, reuse_port: bool) -> socket.socket:
    """A socket bound to host:port; IPv6 ones IPV6_V6ONLY, so [::]:53 and 0.0.0.0:53 can both be bound."""
    addr = socket.getaddrinfo(host, port, family, kind, 0, socket.AI_NUMERICHOST)[0][4]
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


class UdpListener:
    """One UDP socket, read in batches when readable: the fast path answers what it remembers, the pipeline the rest."""

    ROUNDS = 8  # batches per readiness callback: then the loop serves its other sockets and timers

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server, self.sock = server, sock
        sock.setblocking(False)
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        loop.add_reader(self.sock.fileno(), self.readable)

    def close(self) -> None:
        if self.loop is not None and self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def readable(self) -> None:
        server, fast = self.server, self.server.fast
        for _ in range(self.ROUNDS):
            if server.stopping:  # read and drop: nothing new is answered
                read, slow = _recv_batch(self.sock)[0], []
            elif fast is not None:
                read, slow = fast.drain(self.sock)
            else:
                read, slow = _recv_batch(self.sock)
            for data, addr in slow:
                server.answer(data, addr[0], False, self._replier(addr))
            if read < BATCH:
                return

    def _replier(self, addr: tuple) -> Callable[[Payload], None]:
        sendto = self.sock.sendto

        def send(reply: Payload) -> None:
            if reply and self.sock.fileno() >= 0:
                try:
                    sendto(reply, addr)
                except OSError as exc:  # a full socket buffer, or the client's ICMP error: UDP may drop
                    log.debug("udp send failed client=%s error=%s", addr[0], exc)

        return send


def _recv_batch(sock: socket.socket) -> tuple[int, list]:
    """Up to BATCH datagrams with their addresses, none answered (no fast path, or stopping)."""
    batch = []
    while len(batch) < BATCH:
        try:
            batch.append(sock.recvfrom(65535))
        except OSError:  # BlockingIOError: nothing left; else an ICMP error reported on the socket
            break
    return len(batch), batch


class TcpConnection(asyncio.Protocol):
    """One TCP client: length-framed queries, pipelined, answered out of order; bounded in memory and time.

    Per connection at most MAX_PENDING queries are in flight and about WRITE_HIGH bytes of replies wait in
    the write buffer: above either, reading pauses (the kernel's buffers then push back on the client). A
    client that stops reading for IDLE seconds, or never completes a frame, is aborted (not closed: close()
    would wait for a buffer the client never drains).
    """

    MAX_PENDING = 64
    WRITE_HIGH = 64 * 1024
    MAX_BUFFER = 2 + 65535  # one maximal frame: more unparsed input than that is never held

    def __init__(self, server: Server) -> None:
        self.server = server
        self.buffer = b""
        self.pending = 0
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.write_paused = False
        self.read_paused = False
        self.parsing = False  # _frames is running: a synchronous answer must not re-enter it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        conns = self.server.tcp_connections
        if len(conns) >= self.server.tcp_max_connections:
            # make room: the least recently active connection goes, pending queries or not (a thousand slow
            # queries must not lock every new client out: TCP is also the fallback for truncated answers)
            oldest = next(iter(conns), None)
            if oldest is None:
                self.server.metrics.tcp_rejected.inc()
                self.closed = True
                transport.close()
                return
            conns.pop(oldest, None)
            oldest.abort()
            self.server.metrics.tcp_rejected.inc()
        peer = transport.get_extra_info("peername")
        if peer is None:  # reset before we got here: nothing to serve
            self.closed = True
            transport.close()
            return
        self.peer = peer[0]
        conns[self] = None
        transport.set_write_buffer_limits(high=self.WRITE_HIGH)
        self._arm()

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(self.server.tcp_idle_timeout, self._idle)

    def _idle(self) -> None:
        """No complete frame and no reply taken for the idle timeout: the client is gone, stalled or dribbling."""
        if self.pending and not self.write_paused:  # queries still with the upstreams (bounded by their deadline)
            self._arm()
        else:
            self.abort()

    def abort(self) -> None:
        self.closed = True
        self.buffer = b""
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self not in self.server.tcp_connections:  # evicted to make room: its reading is over
            return
        self.buffer += data
        self._frames()

    def _frames(self) -> None:
        """Answer the complete frames in the buffer while under the in-flight bound; pause reading otherwise."""
        if self.parsing:
            return
        self.parsing = True
        try:
            self._parse()
        finally:
            self.parsing = False
        self._flow()

    def _parse(self) -> None:
        while len(self.buffer) >= 2 and self.pending < self.MAX_PENDING and not self.write_paused and not self.closed:
            size = int.from_bytes(self.buffer[:2], "big")
            if size < 12:  # zero-length or header-less frame: nothing to answer, stop reading
                self.server.metrics.malformed.labels(Malformed.TCP_FRAME).inc()
                self.abort()
                return
            if len(self.buffer) < 2 + size:
                break
            msg, self.buffer = self.buffer[2 : 2 + size], self.buffer[2 + size :]
            self.server.tcp_connections.move_to_end(self)
            self._arm()  # only a complete frame counts as activity: a byte every few seconds does not
            self.pending += 1
            self.server.answer(msg, self.peer, True, self._send)

    def _flow(self) -> None:
        if self.closed:
            return
        busy = self.write_paused or self.pending >= self.MAX_PENDING or len(self.buffer) > self.MAX_BUFFER
        if busy and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
        elif not busy and self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.closed:
            self.server.tcp_connections.move_to_end(self)
            self._arm()
        self._frames()

    def _send(self, payload: Payload) -> None:
        self.pending -= 1
        if self.closed:
            return
        if payload is not None:
            for msg in payload if isinstance(payload, list) else (payload,):
                self.transport.write(wire.frame(msg))
        self._frames()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.buffer = b""
        if self.timer is not None:
            self.timer.cancel()
        self.server.tcp_connections.pop(self, None)


def _in_daemon_thread(fn: Callable, *args) -> asyncio.Future:
    """fn(*args) in a daemon thread (shutdown never waits for it), its result as a future of this loop."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result, error) -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(result)

    def work() -> None:
        try:
            outcome = (fn(*args), None)
        except BaseException as exc:  # handed to the awaiting coroutine, which logs and answers SERVFAIL
            outcome = (None, exc)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop closed meanwhile (shutdown): nobody waits for this reply
            pass

    threading.Thread(target=work, name="transfer", daemon=True).start()
    return future
