"""Reply cache of wire bytes keyed on the question and EDNS/DO/CD/AD, with TTL count-down and caps, stale serving and size bounds; no I/O."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from . import wire

# An entry is a plain tuple (reply, TTL offsets, stored at, TTL) of atoms: the cyclic GC stops tracking exact
# tuples of atoms, whereas 100k tracked entry objects add ~70 ms to every full collection (a latency spike
# every few seconds under cache-miss traffic).
Entry = tuple[bytes, tuple[int, ...], float, int]


class Cache:
    """LRU of upstream replies; a hit is re-addressed and its TTLs counted down, never re-parsed."""

    def __init__(
        self,
        max_entries: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
        *,
        max_ttl: int = 86_400,
        min_ttl: int = 0,
        servfail_ttl: int = 2,
        stale_ttl: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.max_ttl, self.min_ttl, self.servfail_ttl, self.stale_ttl = max_ttl, min_ttl, servfail_ttl, stale_ttl
        self.clock = clock
        self.entries: OrderedDict[bytes, Entry] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, query: wire.Query, *, stale: bool = False) -> bytes | None:
        """The cached reply for query, re-addressed with TTLs counted down; stale=True allows expired entries."""
        hit = self.lookup(query, stale=stale)
        return None if hit is None else hit[0]

    def lookup(self, query: wire.Query, *, stale: bool = False) -> tuple[bytes, float, tuple | None] | None:
        """get(), for how many more seconds that reply stays the same (until its TTLs next count down; 0 for a
        stale one), and how to count it down later: (the stored reply re-addressed, its TTL offsets, seconds
        since it was stored, its TTL), None for a stale one."""
        key = query.key
        entry = self.entries.get(key)
        if entry is None:
            return None
        reply, offsets, stored, ttl = entry
        elapsed = self.clock() - stored
        age = int(elapsed)
        fresh_for = age + 1 - elapsed
        if age >= ttl:
            if age >= ttl + self.stale_ttl:
                self._remove(key)
                return None
            if not stale:
                return None
            age, fresh_for = -1, 0.0  # RFC 8767: a stale answer goes out with TTL 30
        self.entries.move_to_end(key)
        template = wire.with_id_and_question(reply, query)
        if age < 0:
            return wire.patch_ttls(template, offsets, age), fresh_for, None
        return wire.patch_ttls(template, offsets, age), fresh_for, (template, offsets, elapsed, ttl)

    def put(self, query: wire.Query, reply: bytes) -> bool:
        """Store an upstream reply if it may be cached; return whether it was."""
        return self.store(query, reply)[1]

    def store(self, query: wire.Query, reply: bytes, scan: wire.ReplyScan | None = None) -> tuple[bytes, bool]:
        """The reply as clients get it (no TTL above max_ttl) and whether it was cached; scan: the reply's, if the
        caller has it (wire.forwarded), else it is scanned here."""
        if scan is None:
            try:
                scan = wire.scan_reply(reply)
            except wire.MalformedQuery:
                return reply, False
        if scan.top > self.max_ttl:
            reply = wire.cap_ttls(reply, scan.ttl_offsets, self.max_ttl)
        if scan.truncated:
            return reply, False
        if scan.rcode == wire.SERVFAIL:
            ttl = self.servfail_ttl
        elif scan.ttl is None:
            return reply, False
        else:
            ttl = max(self.min_ttl, min(scan.ttl, self.max_ttl))
        if ttl <= 0:
            return reply, False
        key = query.key
        if key in self.entries:
            self._remove(key)
        self.entries[key] = (reply, scan.ttl_offsets, self.clock(), ttl)
        self.bytes += len(reply) + len(key)
        while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
            self._remove(next(iter(self.entries)))
        return reply, True

    def _remove(self, key: bytes) -> None:
        entry = self.entries.pop(key)
        self.bytes -= len(entry[0]) + len(key)

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0
