"""cache: TTL count-down, negative caching, eviction and stale serving, with a fake clock."""

from __future__ import annotations

import dns.message
import dns.rrset

from resolverguard import wire
from resolverguard.cache import Cache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def query(name="a.example", qtype="A", **kw) -> wire.Query:
    return wire.parse_query(dns.message.make_query(name, qtype, **kw).to_wire(), "127.0.0.1", False)


def answer(q: wire.Query, ttl=300, rcode=0, soa_min=None) -> bytes:
    r = dns.message.make_response(dns.message.from_wire(q.data))
    r.set_rcode(rcode)
    if rcode == 0 and soa_min is None:
        r.answer.append(dns.rrset.from_text(q.qname + ".", ttl, "IN", "A", "192.0.2.1"))
    if soa_min is not None:
        r.authority.append(dns.rrset.from_text("example.", ttl, "IN", "SOA", f"ns. h. 1 2 3 4 {soa_min}"))
    return r.to_wire()


def test_hit_counts_ttl_down_and_expires():
    clock = Clock()
    c = Cache(clock=clock)
    q = query()
    assert c.put(q, answer(q, 300))
    clock.now += 100
    again = query("A.EXAMPLE")
    msg = dns.message.from_wire(c.get(again))
    assert msg.answer[0].ttl == 200 and msg.id == dns.message.from_wire(again.data).id
    assert msg.question[0].name.to_text() == "A.EXAMPLE."
    clock.now += 200
    assert c.get(q) is None and len(c) == 0


def test_negative_cached_for_soa_minimum_and_servfail_briefly():
    clock = Clock()
    c = Cache(servfail_ttl=2, clock=clock)
    q = query("nx.example")
    assert c.put(q, answer(q, 3600, rcode=3, soa_min=20))
    clock.now += 19
    assert c.get(q) is not None
    clock.now += 1
    assert c.get(q) is None
    s = query("sf.example")
    assert c.put(s, answer(s, rcode=2))
    clock.now += 2
    assert c.get(s) is None
    r = query("refused.example")
    assert not c.put(r, answer(r, rcode=5))


def test_key_includes_do_and_cd_and_edns():
    c = Cache(clock=Clock())
    plain = query()
    c.put(plain, answer(plain))
    assert c.get(query(use_edns=0, want_dnssec=True)) is None
    assert c.get(query(use_edns=0)) is None
    assert c.get(query()) is not None


def test_bounded_by_entries_and_bytes_lru():
    c = Cache(max_entries=3, clock=Clock())
    qs = [query(f"n{i}.example") for i in range(4)]
    for q in qs[:3]:
        c.put(q, answer(q))
    c.get(qs[0])  # touch: n1 is now the least recently used
    c.put(qs[3], answer(qs[3]))
    assert c.get(qs[1]) is None and c.get(qs[0]) is not None and len(c) == 3
    small = Cache(max_bytes=200, clock=Clock())
    for q in qs:
        small.put(q, answer(q))
    assert small.bytes <= 200 and len(small) < 4


def test_truncated_replies_are_not_cached():
    q = query()
    tc = bytearray(answer(q))
    tc[2] |= 0x02
    assert not Cache(clock=Clock()).put(q, bytes(tc))


def test_serve_stale_within_window_with_ttl_30():
    clock = Clock()
    c = Cache(stale_ttl=600, clock=clock)
    q = query()
    c.put(q, answer(q, 300))
    clock.now += 400
    assert c.get(q) is None
    stale = dns.message.from_wire(c.get(q, stale=True))
    assert stale.answer[0].ttl == 30
    clock.now += 600
    assert c.get(q, stale=True) is None
