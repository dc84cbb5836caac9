"""The UDP fast path: answers remembered by the query octets as received, after the ID.

The pipeline answers a query once; if that reply may be given again to the same octets (a cache hit until it
expires, its TTLs counted down here once per second; a block until the policy changes), Server remembers it.
Until then a datagram with the same octets after the ID, from a client the access list admits, the rate limit
exempts and no client-IP rule names, is answered by drain(): one dict lookup, one freshness check, the reply
with the query's ID, its counters incremented in the metrics' int64 slots. Everything else goes to
Server.answer.

drain() is the compiled loop of _fastudp.c (recvmmsg/sendmmsg, a batch per system call) when it was built,
else drain_python() below: the same loop, the same entries, the same counters, one datagram per call.
"""

from __future__ import annotations

import bisect
import os
import socket
import time
from collections.abc import Callable

from . import events, wire
from .metrics import LATENCY_BUCKETS_NS, Metrics

try:
    from . import _fastudp
except ImportError:  # built without a C compiler: the pure-Python loop
    _fastudp = None

BATCH = 64  # datagrams read per drain() call (the compiled loop's recvmmsg vector)
# An entry: (fresh until, on the table's clock; reply sent, any ID; counter slots each answer increments;
# first duration-bucket slot; duration-sum slot, in ns), and for a cache hit four more: (its reply as stored,
# re-addressed, TTLs not counted down; their offsets; stored at; expires at). Past its second such an entry is
# renewed by the drain loop itself: TTLs counted down from the template, fresh until the next second.
# A block while the event log is on has one more item instead, its event line tail (events.block_tail): the
# loop hands (tail, client) back for every lookup it answers, and events.emit_blocks writes them.
# Plain tuples of atoms: the cyclic GC skips them.
Entry = tuple


def renewed(table: dict, key: bytes, entry: tuple, now: float) -> tuple | None:
    """A renewable entry past its second, counted down and put back; None when not renewable or expired."""
    if len(entry) != 9 or not entry[7] <= now < entry[8]:
        return None
    _, _, slots, first, total, template, offsets, stored, expires = entry
    age = int(now - stored)
    fresh = (stored + age + 1, wire.patch_ttls(template, offsets, age), slots, first, total, *entry[5:])
    table[key] = fresh
    return fresh


def compiled() -> bool:
    """Whether the compiled loop is in use (RESOLVERGUARD_PURE=1 forces the pure-Python one)."""
    return _fastudp is not None and not os.environ.get("RESOLVERGUARD_PURE")


def drain_python(
    sock: socket.socket, table: dict, clients: dict, counts, now: float, bounds: tuple, logged: list | None = None
) -> tuple:
    """Read up to BATCH datagrams; answer the fresh remembered ones; return (read, [(data, addr) for the rest]).
    logged: where (event tail, client host) goes for each answered entry that carries an event."""
    started, slow, answered = time.perf_counter_ns(), [], []
    recv, send, get = sock.recvfrom, sock.sendto, table.get
    read = 0
    while read < BATCH:
        try:
            data, addr = recv(65535)
        except OSError:  # BlockingIOError: nothing left; else an ICMP error reported on the socket
            break
        read += 1
        entry = get(data[2:]) if clients.get(addr[0]) is True and len(data) >= 12 else None
        if entry is not None and entry[0] <= now:
            entry = renewed(table, data[2:], entry, now)
        if entry is not None:
            try:
                send(data[:2] + entry[1][2:], addr)
            except OSError:  # a datagram the kernel will not take is dropped, as UDP may
                pass
            answered.append(entry)
            if len(entry) == 6 and logged is not None:
                logged.append((entry[5], addr[0]))
        else:
            slow.append((data, addr))
    if answered:
        elapsed = time.perf_counter_ns() - started
        bucket = bisect.bisect_left(bounds, elapsed)
        for _, _, slots, first, total, *_ in answered:
            for slot in slots:
                counts[slot] += 1
            counts[first + bucket] += 1
            counts[total] += elapsed
    return read, slow


class FastTable:
    """The remembered answers and the clients they may go to; bounded, and emptied when the policy changes."""

    def __init__(
        self,
        metrics: Metrics,
        current_policy: Callable[[], object],
        unthrottled: Callable[[str], bool],
        *,
        max_entries: int = 100_000,
        max_clients: int = 65_536,
        pure: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics, self.current_policy, self.unthrottled = metrics, current_policy, unthrottled
        self.max_entries, self.max_clients, self.clock = max_entries, max_clients, clock
        self.compiled = compiled() if pure is None else not pure and _fastudp is not None
        self.entries: dict[bytes, Entry] = {}
        self.clients: dict[bytes | str, bool] = {}  # drain()'s key of each client it may answer -> True
        self.eligible: dict[str, bool] = {}  # client host -> whether its answers may be remembered and given
        self.policy = None
        self.events = False  # whether an entry carries an event (then drain() collects them)

    def drain(self, sock: socket.socket) -> tuple[int, list]:
        """One batch from sock: (datagrams read, the ones the pipeline must answer, with their addresses)."""
        policy = self.current_policy()
        if policy is not self.policy:  # a reload, or a label learned (a new snapshot): forget
            self.entries.clear()
            if self.policy is None or policy.table is not self.policy.table:  # client-IP rules may have changed
                self.clients.clear()
                self.eligible.clear()
            self.policy = policy
        counts, now, logged = self.metrics.counts, self.clock(), [] if self.events else None
        if self.compiled:
            got = _fastudp.drain(sock.fileno(), self.entries, self.clients, counts, now, LATENCY_BUCKETS_NS, logged)
        else:
            got = drain_python(sock, self.entries, self.clients, counts, now, LATENCY_BUCKETS_NS, logged)
        if logged:
            events.emit_blocks(logged)
        return got

    def remember(
        self,
        query: wire.Query,
        reply: bytes,
        outcome: str,
        fresh_for: float,
        slots: tuple[int, ...],
        renew: tuple | None = None,
        event: str | None = None,
    ) -> None:
        """reply is the answer to query's octets for fresh_for more seconds (inf: until the policy changes), with
        no other side effect than the counters in slots and the query/response/duration series recorded here.
        renew (template, TTL offsets, seconds since stored, TTL), for a cache hit: how to count its TTLs down
        after that, until it expires. event: a block's event line tail, handed back for each lookup answered."""
        if self.policy is not self.current_policy() or not self._eligible(query.client):
            return  # decided under a policy drain() has not seen yet, or for a client with answers of its own
        m = self.metrics
        response, first, total = m.reply_slots(outcome, reply)
        slots = (*slots, m.query_slot("udp", query.qtype), response)
        entries = self.entries
        if len(entries) >= self.max_entries:
            del entries[next(iter(entries))]  # the oldest remembered
        now = self.clock()
        entry = (now + fresh_for, reply, slots, first, total)
        if event is not None:
            entry += (event,)
            self.events = True
        elif renew is not None:
            template, offsets, elapsed, ttl = renew
            entry += (template, offsets, now - elapsed, now - elapsed + ttl)
        entries[query.data[2:]] = entry

    def _eligible(self, client: str) -> bool:
        """Admitted, never rate limited, and no client-IP rule of its own (the same answers as everyone)."""
        ok = self.eligible.get(client)
        if ok is None:
            if len(self.eligible) >= self.max_clients:
                self.eligible.clear()
                self.clients.clear()
            key = self.client_key(client)
            ok = key is not None and self.unthrottled(client) and self.policy.decides_alike(client)
            self.eligible[client] = ok
            if ok:
                self.clients[key] = True
        return ok

    def client_key(self, host: str) -> bytes | str | None:
        """How drain() sees a client: address octets for the compiled loop (None: a scoped IPv6 address, which
        it never answers), the host string for Python's."""
        if not self.compiled:
            return host
        try:
            return socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        except OSError:
            return None
