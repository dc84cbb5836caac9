"""dnspython and dnslib read the same message the same way: a second, independent parser for the wire tests.

The hand-written scanners (wire.parse_query, wire.scan_reply, the fast path's re-addressing) are checked
against dnspython everywhere; these helpers let a test check them against dnslib too, so a bug shared by
our scanner and one library (or a library's own quirk taken for the truth) shows up. ``view`` reduces a
message to what both libraries can say about it, in one shape: header fields, question, and each record's
owner labels (lower case), type, class, TTL and, for A/AAAA, the address.

dnslib refuses a label that is not UTF-8 (RFC 2181 §11 allows any octets): ``dnslib_reads`` says whether a
name is one dnslib can read, so a test can leave the others to dnspython alone.
"""

from __future__ import annotations

import dns.exception
import dns.message
import dns.rdatatype
import dnslib

Record = tuple[tuple[bytes, ...], int, int, int, str | None]


def _labels(labels) -> tuple[bytes, ...]:
    return tuple(label.lower() for label in labels if label)


def _address(rdtype: int, text: str) -> str | None:
    return text if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) else None


def dnslib_reads(labels) -> bool:
    """Every label decodes as UTF-8: the names dnslib can read."""
    try:
        for label in labels:
            label.decode()
    except UnicodeDecodeError:
        return False
    return True


def dnslib_view(data: bytes) -> dict | None:
    """What dnslib reads in ``data``; None if dnslib refuses it (its only error is dnslib.DNSError)."""
    try:
        msg = dnslib.DNSRecord.parse(data)
    except dnslib.DNSError:
        return None
    opt = [rr for rr in msg.ar if rr.rtype == dns.rdatatype.OPT]
    return {
        "id": msg.header.id,
        "qr": msg.header.qr,
        "opcode": msg.header.opcode,
        "rcode": msg.header.rcode,  # the header's 4 bits (dnslib does not fold in the OPT's extended rcode)
        "tc": msg.header.tc,
        "question": [(_labels(q.qname.label), q.qtype, q.qclass) for q in msg.questions],
        "answer": [_dnslib_record(rr) for rr in msg.rr],
        "authority": [_dnslib_record(rr) for rr in msg.auth],
        "edns": (max(512, opt[0].rclass), bool(opt[0].ttl & 0x8000)) if opt else None,
    }


def _dnslib_record(rr) -> Record:
    return _labels(rr.rname.label), rr.rtype, rr.rclass, rr.ttl, _address(rr.rtype, str(rr.rdata))


def dnspython_view(data: bytes) -> dict | None:
    """The same view as dnslib_view, read by dnspython; None if dnspython refuses the message."""
    try:
        msg = dns.message.from_wire(data, one_rr_per_rrset=True)
    except dns.exception.DNSException:
        return None
    return {
        "id": msg.id,
        "qr": int(bool(msg.flags & 0x8000)),
        "opcode": msg.opcode(),
        "rcode": msg.flags & 0xF,
        "tc": int(bool(msg.flags & 0x0200)),
        "question": [(_labels(q.name.labels), q.rdtype, q.rdclass) for q in msg.question],
        "answer": [_dnspython_record(rrset) for rrset in msg.answer],
        "authority": [_dnspython_record(rrset) for rrset in msg.authority],
        "edns": (max(512, msg.payload), bool(msg.ednsflags & 0x8000)) if msg.edns >= 0 else None,
    }


def _dnspython_record(rrset) -> Record:
    [rdata] = list(rrset)
    return _labels(rrset.name.labels), rrset.rdtype, rrset.rdclass, rrset.ttl, _address(rrset.rdtype, rdata.to_text())


def both(data: bytes) -> dict:
    """The one view both libraries agree on; AssertionError if either refuses ``data`` or they differ."""
    a, b = dnspython_view(data), dnslib_view(data)
    assert a is not None, "dnspython cannot read the message"
    assert b is not None, "dnslib cannot read the message"
    assert a == b, f"dnspython and dnslib read it differently:\n{a}\n{b}"
    return a
