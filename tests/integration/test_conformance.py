"""DNS conformance of what the guard sends clients (issue 13 Medium 5, Low 6-9): per-client EDNS options never
cached and replayed, a cache key that respects AD, BADVERS, OPT on synthesised replies, CD on blocks, TTL cap,
forwarder header bits, REFUSED failover, RFC 2181 section 9 fitting."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rrset
import pytest
from fakes import FakeUpstream


class ChattyUpstream(FakeUpstream):
    """An authoritative-looking upstream: AA set, RA clear, echoes COOKIE with a server cookie, always NSID,
    AD=1 to queries with AD or DO (as a validating resolver would), big glue in the additional section."""

    def _reply(self, data: bytes, transport: str):
        rule, wire = super()._reply(data, transport)
        if wire is None:
            return rule, wire
        q, r = dns.message.from_wire(data), dns.message.from_wire(wire)
        r.flags = (r.flags | dns.flags.AA) & ~dns.flags.RA
        if q.flags & dns.flags.AD or q.ednsflags & dns.flags.DO:
            r.flags |= dns.flags.AD
        if q.edns >= 0:
            options = [dns.edns.GenericOption(dns.edns.NSID, b"upstream-1")]
            for o in q.options:
                if o.otype == dns.edns.COOKIE:
                    options.append(dns.edns.GenericOption(dns.edns.COOKIE, o.to_wire()[:8] + b"S" * 16))
            r.use_edns(0, q.ednsflags & dns.flags.DO, 1232, options=options)
        if q.question[0].name.to_text() == "glue.example.":
            for i in range(20):
                r.additional.append(dns.rrset.from_text(f"ns{i}.glue.example.", 300, "IN", "AAAA", f"2001:db8::{i}"))
        return rule, r.to_wire()


@pytest.fixture
def chatty():
    up = ChattyUpstream()
    yield up
    up.close()


def _start(start_guard, *upstreams: FakeUpstream, args: tuple[str, ...] = ()):
    argv = [a for u in upstreams for a in ("--upstream", u.address)]
    return start_guard(*argv, *args)


def _udp(guard, q: dns.message.Message) -> dns.message.Message:
    return dns.query.udp(q, guard.host, port=guard.port, timeout=6)


def _cookie(client: bytes) -> dns.edns.Option:
    return dns.edns.GenericOption(dns.edns.COOKIE, client)


def test_cookie_and_nsid_are_never_replayed_from_the_cache(tmp_path, start_guard, chatty):
    chatty.on("c.example", "A", "c.example. 300 A 192.0.2.1")
    guard = _start(start_guard, chatty)
    for client in (b"AAAAAAAA", b"BBBBBBBB"):  # the second is a cache hit
        r = _udp(guard, dns.message.make_query("c.example", "A", use_edns=0, options=[_cookie(client)]))
        assert r.rcode() == dns.rcode.NOERROR and r.answer
        assert [o for o in r.options if o.otype in (dns.edns.COOKIE, dns.edns.NSID)] == []
    assert chatty.count("c.example") == 1


def test_ad_asker_is_not_served_the_ad0_answer(tmp_path, start_guard, chatty):
    chatty.on("v.example", "A", "v.example. 300 A 192.0.2.2")
    guard = _start(start_guard, chatty)
    assert not _udp(guard, dns.message.make_query("v.example", "A")).flags & dns.flags.AD
    q = dns.message.make_query("v.example", "A")
    q.flags |= dns.flags.AD
    assert _udp(guard, q).flags & dns.flags.AD


def test_edns_version_1_gets_badvers_before_the_cache(tmp_path, upstream, start_guard):
    upstream.on("e.example", "A", "e.example. 300 A 192.0.2.3")
    guard = _start(start_guard, upstream)
    assert guard.query("e.example", "A", use_edns=0).answer  # cached now
    r = _udp(guard, dns.message.make_query("e.example", "A", use_edns=1))
    assert r.rcode() == dns.rcode.BADVERS and r.edns == 0 and not r.answer
    assert upstream.count("e.example") == 1


def test_synthesised_replies_carry_opt_and_notimp_has_no_ra(tmp_path, upstream, start_guard):
    guard = _start(start_guard, upstream, args=("--protect", "army.mil"))
    notimp = dns.message.make_query("x.example", "A", use_edns=0)
    notimp.set_opcode(15)
    formerr = dns.message.make_query("x.example", "A", use_edns=0)
    formerr.question.append(formerr.question[0])  # QDCOUNT 2
    cases = {
        "notimp": notimp,
        "formerr": formerr,
        "refused": dns.message.make_query("x.example", "AXFR", use_edns=0),
        "any": dns.message.make_query("x.example", "ANY", use_edns=0),
    }
    for what, q in cases.items():
        assert _udp(guard, q).edns == 0, what
    r = _udp(guard, notimp)
    assert r.rcode() == dns.rcode.NOTIMP and not r.flags & dns.flags.RA
    blocked = dns.message.make_query("army.ml", "A", use_edns=0)
    blocked.flags |= dns.flags.CD
    r = _udp(guard, blocked)
    assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.CD and r.edns == 0


def test_forwarder_header_and_ttl_cap(tmp_path, start_guard, chatty):
    chatty.on("long.example", "A", "long.example. 604800 A 192.0.2.4")
    guard = _start(start_guard, chatty)
    for _ in range(2):  # forwarded, then cached
        r = _udp(guard, dns.message.make_query("long.example", "A"))
        assert r.answer[0].ttl <= 86400
        assert not r.flags & dns.flags.AA and r.flags & dns.flags.RA


def test_refused_upstream_is_failed_over_and_alone_gives_servfail_with_ede(tmp_path, start_guard):
    bad, good = FakeUpstream(), FakeUpstream()
    try:
        bad.on("r.example", "A", rcode=dns.rcode.REFUSED)
        good.on("r.example", "A", "r.example. 300 A 192.0.2.6")
        guard = _start(start_guard, bad, good)
        assert _udp(guard, dns.message.make_query("r.example", "A")).answer[0][0].to_text() == "192.0.2.6"
        alone = _start(start_guard, bad)
        r = _udp(alone, dns.message.make_query("r.example", "A", use_edns=0))
        assert r.rcode() == dns.rcode.SERVFAIL and [o.code for o in r.options if o.otype == dns.edns.EDE] == [23]
    finally:
        bad.close()
        good.close()


def test_optional_records_are_dropped_before_truncation(tmp_path, start_guard, chatty):
    chatty.on("glue.example", "A", "glue.example. 300 A 192.0.2.7")
    guard = _start(start_guard, chatty)
    r = _udp(guard, dns.message.make_query("glue.example", "A"))  # no EDNS: 512 octets
    assert not r.flags & dns.flags.TC and r.answer[0][0].to_text() == "192.0.2.7" and not r.additional
