"""wire: the hand-written question scan agrees with dnspython and refuses what is malformed."""

from __future__ import annotations

import struct

import dns.message
import dns.name
import pytest

from resolverguard import wire
from resolverguard.errors import MalformedQuery
from tests.twoparsers import both


def q(name="Example.MIL", qtype="MX", **kw) -> bytes:
    return dns.message.make_query(name, qtype, **kw).to_wire()


def test_scan_matches_dnspython():
    data = q("Mail.Army.ML", "AAAA", use_edns=0, payload=1400, want_dnssec=True)
    query = wire.parse_query(data, "127.0.0.1", False)
    msg = dns.message.from_wire(data)
    assert query.qname == "mail.army.ml"
    assert query.qtype == 28 and query.qclass == 1 and query.id == msg.id
    assert query.edns and query.payload == 1400 and query.do
    assert data[12 : query.qend] == msg.question[0].name.to_wire() + struct.pack("!HH", 28, 1)


def test_no_edns_means_512_and_root_name():
    query = wire.parse_query(q(".", "NS"), "::1", True)
    assert query.qname == "" and not query.edns and query.payload == 512 and query.tcp


def test_odd_label_bytes_are_escaped_like_dnspython():
    name = dns.name.Name([b"a.b", b"\x00x", b"ok", b""])
    data = dns.message.make_query(name, "A").to_wire()
    assert wire.parse_query(data, "c", False).qname == name.to_text().rstrip(".")


@pytest.mark.parametrize(
    "mutate, error",
    [
        (lambda d: d[:8], wire.Unreadable),
        (lambda d: d[:2] + b"\x81\x00" + d[4:], wire.NotQuery),
        (lambda d: d[:2] + b"\x28\x00" + d[4:], wire.NotImplementedOpcode),  # UPDATE
        (lambda d: d[:4] + b"\x00\x00" + d[6:], MalformedQuery),  # qdcount 0
        (lambda d: d[:4] + b"\x00\x02" + d[6:], MalformedQuery),  # qdcount 2
        (lambda d: d[:12] + b"\xc0\x0c" + d[-4:], MalformedQuery),  # compression pointer loop
        (lambda d: d[:12] + b"\x40" + b"a" * 64 + b"\x00" + d[-4:], MalformedQuery),  # label over 63
        (lambda d: d[:12] + (b"\x3f" + b"a" * 63) * 4 + b"\x00" + d[-4:], MalformedQuery),  # name over 255
        (lambda d: d[:-2], MalformedQuery),  # truncated question
    ],
)
def test_malformed_queries(mutate, error):
    with pytest.raises(error):
        wire.parse_query(mutate(q()), "c", False)


def test_bad_opt_rejected():
    data = q(use_edns=0)
    two_opts = data[:10] + b"\x00\x02" + data[12:] + data[-11:]
    with pytest.raises(MalformedQuery):
        wire.parse_query(two_opts, "c", False)


def test_error_reply_keeps_id_and_question():
    data = q()
    reply = dns.message.from_wire(wire.error_reply(data[:4] + b"\x00\x01" + data[6:], wire.FORMERR))
    assert reply.rcode() == 1 and reply.id == dns.message.from_wire(data).id and len(reply.question) == 1
    assert wire.error_reply(b"\x00" * 5, 1) is None


def test_fit_udp_truncates_to_question_with_tc():
    data = q("big.example", "TXT")
    query = wire.parse_query(data, "c", False)
    big = wire.reply_for(query, 0, b"\x00" * 600)
    cut = wire.fit_udp(big, query)
    assert len(cut) <= 512
    msg = dns.message.from_wire(cut)
    assert msg.flags & 0x0200 and msg.question[0].name.to_text() == "big.example."
    assert wire.fit_udp(b"x" * 100, query) == b"x" * 100


def test_scan_reply_positive_and_negative_ttls():
    query = dns.message.make_query("a.example", "A")
    r = dns.message.make_response(query)
    r.answer.append(dns.rrset.from_text("a.example.", 300, "IN", "A", "192.0.2.1"))
    r.additional.append(dns.rrset.from_text("b.example.", 100, "IN", "A", "192.0.2.2"))
    scan = wire.scan_reply(r.to_wire())
    assert scan.rcode == 0 and scan.ttl == 100 and len(scan.ttl_offsets) == 2
    n = dns.message.make_response(query)
    n.set_rcode(3)
    n.authority.append(dns.rrset.from_text("example.", 900, "IN", "SOA", "ns. host. 1 2 3 4 30"))
    assert wire.scan_reply(n.to_wire()).ttl == 30
    n.authority.clear()
    assert wire.scan_reply(n.to_wire()).ttl is None  # no SOA: not cacheable (RFC 2308)


def test_patch_ttls_counts_down_and_floors_at_zero():
    query = dns.message.make_query("a.example", "A")
    r = dns.message.make_response(query)
    r.answer.append(dns.rrset.from_text("a.example.", 5, "IN", "A", "192.0.2.1"))
    data = r.to_wire()
    scan = wire.scan_reply(data)
    assert dns.message.from_wire(wire.patch_ttls(data, scan.ttl_offsets, 3)).answer[0].ttl == 2
    assert dns.message.from_wire(wire.patch_ttls(data, scan.ttl_offsets, 9)).answer[0].ttl == 0


def test_reply_matches_requires_id_qr_and_same_question():
    sent = q()
    good = dns.message.make_response(dns.message.from_wire(sent)).to_wire()
    qend = wire.parse_query(sent, "c", False).qend
    assert wire.reply_matches(good, sent, qend)
    assert not wire.reply_matches(b"\x00\x00" + good[2:], sent, qend) or sent[:2] == b"\x00\x00"
    assert not wire.reply_matches(sent, sent, qend)  # QR clear
    other = dns.message.make_response(dns.message.make_query("Example.MIM", "MX")).to_wire()
    assert not wire.reply_matches(sent[:2] + other[2:], sent, qend)


@pytest.mark.parametrize(
    "data",
    [
        q("Mail.Army.ML", "AAAA", use_edns=0, payload=1400, want_dnssec=True),
        q("army.ml", "A"),
        q(".", "NS", use_edns=0, payload=100),  # payload under 512 counts as 512
        q("xn--gmal-nza.com", "MX", use_edns=0, payload=4096),
        q("_25._tcp.mail.example", "TLSA", want_dnssec=False, use_edns=0),
        q("a" * 63 + ".b", "TXT"),
        dns.message.make_query(dns.name.Name([b"a b", b"c\\d", b"ok", b""]), "A").to_wire(),  # escaped in text
        dns.message.make_query("x.example", "CAA", rdclass="CH").to_wire(),
    ],
)
def test_scan_matches_dnslib_and_dnspython(data):
    """The question scan reads what two independent parsers read (tests/twoparsers.py)."""
    query = wire.parse_query(data, "127.0.0.1", False)
    view = both(data)
    labels = tuple(lb.lower() for lb in dns.name.from_text(query.qname + "." if query.qname else ".").labels if lb)
    assert view["question"] == [(labels, query.qtype, query.qclass)] and view["id"] == query.id
    assert view["edns"] == ((query.payload, query.do) if query.edns else None)


def test_replies_built_by_wire_read_the_same_in_dnslib():
    data = q("Army.ML", "MX", use_edns=0, payload=1232)
    query = wire.parse_query(data, "127.0.0.1", False)
    for reply in (wire.reply_for(query, wire.REFUSED), wire.error_reply(data, wire.FORMERR)):
        view = both(reply)
        assert (view["id"], view["qr"], view["rcode"]) == (query.id, 1, reply[3] & 0xF)
        assert view["question"] == [((b"army", b"ml"), 15, 1)]
