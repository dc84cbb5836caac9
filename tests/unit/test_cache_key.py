"""The cache key and the cleaning of stored replies: what differs per client never reaches the cache."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rrset

from resolverguard import wire


def _key(**kw) -> bytes:
    flags = kw.pop("flags", dns.flags.RD)
    q = dns.message.make_query("Key.Example", "A", **kw)
    q.flags = flags
    return wire.parse_query(q.to_wire(), "c", False).key


def test_edns_do_cd_ad_each_change_the_key():
    keys = {
        _key(),
        _key(use_edns=0),
        _key(use_edns=0, want_dnssec=True),
        _key(flags=dns.flags.RD | dns.flags.CD),
        _key(flags=dns.flags.RD | dns.flags.AD),
    }
    assert len(keys) == 5


def test_cookie_and_nsid_options_do_not_change_the_key():
    cookie = dns.edns.GenericOption(dns.edns.COOKIE, b"12345678")
    assert _key(use_edns=0, options=[cookie]) == _key(use_edns=0, options=[dns.edns.GenericOption(dns.edns.NSID, b"")])


def test_clean_reply_keeps_ede_drops_exchange_options_and_sets_forwarder_bits():
    q = dns.message.make_query("a.example", "A", use_edns=0)
    r = dns.message.make_response(q)
    r.flags |= dns.flags.AA
    r.flags &= ~dns.flags.RA
    r.answer.append(dns.rrset.from_text("a.example.", 300, "IN", "A", "192.0.2.1"))
    r.use_edns(
        0,
        dns.flags.DO | 0x0040,
        1232,
        options=[
            dns.edns.GenericOption(dns.edns.COOKIE, b"c" * 24),
            dns.edns.GenericOption(dns.edns.NSID, b"ns1"),
            dns.edns.EDEOption(3, "stale"),
            dns.edns.GenericOption(65001, b"x"),
        ],
    )
    cleaned = dns.message.from_wire(wire.clean_reply(r.to_wire()))
    assert [o.otype for o in cleaned.options] == [dns.edns.EDE]
    assert not cleaned.flags & dns.flags.AA and cleaned.flags & dns.flags.RA
    assert cleaned.ednsflags == dns.flags.DO and cleaned.answer == r.answer


def test_question_less_formerr_matches_by_id_only():
    sent = dns.message.make_query("a.example", "A", use_edns=0).to_wire()
    qend = wire.parse_query(sent, "c", False).qend
    formerr = sent[:2] + b"\x80\x01" + b"\x00" * 8
    assert wire.reply_matches(formerr, sent, qend)
    assert not wire.reply_matches(sent[:2] + b"\x80\x00" + b"\x00" * 8, sent, qend)  # NOERROR needs the question
