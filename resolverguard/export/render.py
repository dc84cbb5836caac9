"""Zone records → AXFR/IXFR reply messages (RFC 5936, RFC 1995), TSIG-signed in sequence (RFC 8945 §5.3.1); pure.

The body of a transfer is rendered straight to wire, without a dnspython object per record: each owner
is written as its labels up to the longest suffix already in the message, then a compression pointer
(the origin is the question name at offset 12, or written once at the top of a later message); rdata is
rendered once per distinct (ttl, type, rdata) by dnspython, uncompressed. ``zone_messages`` builds the
unsigned messages of one zone version (ID 0) once; ``finish`` gives them a query's ID, RD bit, question
and TSIG. Each message stays ≤ 64 KiB with room for its TSIG record.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.rrset
import dns.tsig

from .records import Export, Record

AXFR_MAX_MESSAGE = 65535
TSIG_RESERVE = 512  # room left in each transfer message for its TSIG record
LIMIT = AXFR_MAX_MESSAGE - TSIG_RESERVE
POINTER_MAX = 0x3FFF  # a compression pointer holds 14 bits: later names cannot be pointed to
FUDGE = 300
_HEADER = struct.Struct("!HHHHHH")
_FIXED = struct.Struct("!HHIH")  # type, class, TTL, rdlength
RecordLike = Sequence  # (owner relative to the origin or "@", ttl, type text, rdata text): a Record or a split line


class _Rdata:
    """(ttl, type, rdata) as text → type, class, TTL, rdlength and rdata on the wire; each distinct one once."""

    def __init__(self, origin: dns.name.Name) -> None:
        self.origin = origin
        self.known: dict[tuple, bytes] = {}

    def wire(self, ttl: int | str, rdtype: str, rdata: str) -> bytes:
        key = (ttl, rdtype, rdata)
        out = self.known.get(key)
        if out is None:
            number = dns.rdatatype.from_text(rdtype)
            data = dns.rdata.from_text(dns.rdataclass.IN, number, rdata, self.origin).to_wire()
            out = self.known[key] = _FIXED.pack(number, dns.rdataclass.IN, int(ttl), len(data)) + data
        return out


def zone_messages(origin: dns.name.Name, records: Iterable[RecordLike], qtype: int = dns.rdatatype.AXFR) -> list[bytes]:
    """The records as unsigned reply messages (ID 0, QR AA, the question ``origin``/``qtype`` IN in the first)."""
    origin_wire = origin.to_wire()
    rdata = _Rdata(origin)
    messages: list[bytes] = []
    parts: list[bytes] = []
    names: dict[str, int] = {}  # lowercase relative suffix → its offset in the message being built
    size = count = 0
    origin_at = -1

    def start(first: bool) -> None:
        nonlocal size, count, origin_at
        parts.clear()
        names.clear()
        parts.append(b"")  # the header, written when the message is finished
        size, count, origin_at = 12, 0, -1
        if first:
            parts.append(origin_wire + struct.pack("!HH", qtype, dns.rdataclass.IN))
            size, origin_at = 12 + len(origin_wire) + 4, 12

    def finish(first: bool) -> None:
        parts[0] = _HEADER.pack(0, dns.flags.QR | dns.flags.AA, 1 if first else 0, count, 0, 0)
        messages.append(b"".join(parts))

    first = True
    start(True)
    for owner, ttl, rdtype, text in records:
        fixed = rdata.wire(ttl, rdtype, text)
        name, added = _owner(owner, names, size, origin_at, origin_wire)
        if size + len(name) + len(fixed) > LIMIT and count:
            finish(first)
            first = False
            start(False)
            name, added = _owner(owner, names, size, origin_at, origin_wire)
        for key, at in added:
            if at <= POINTER_MAX:
                names[key] = at
        if origin_at < 0:  # the origin was written in full at the end of this owner
            origin_at = size + len(name) - len(origin_wire)
        parts.append(name)
        parts.append(fixed)
        size += len(name) + len(fixed)
        count += 1
    finish(first)
    return messages


def _owner(
    owner: str, names: dict[str, int], at: int, origin_at: int, origin_wire: bytes
) -> tuple[bytes, list[tuple[str, int]]]:
    """``owner`` (relative, or "@") written at offset ``at``: its labels up to a known suffix, then a pointer."""
    if owner == "@":
        labels: list[bytes] = []
    elif "\\" in owner:  # escaped characters (even dots) in a label: dnspython reads them; not compressed
        name = dns.name.from_text(owner, dns.name.root).to_wire()[:-1]  # its labels, without the root label
        tail = (0xC000 | origin_at).to_bytes(2, "big") if origin_at >= 0 else origin_wire
        return name + tail, []
    else:
        labels = owner.encode("ascii").split(b".")
    key = owner.lower()
    out = []
    added = []
    for label in labels:
        hit = names.get(key)
        if hit is not None:
            out.append((0xC000 | hit).to_bytes(2, "big"))
            return b"".join(out), added
        if not 0 < len(label) < 64:
            raise dns.name.LabelTooLong if label else dns.name.EmptyLabel
        added.append((key, at))
        out.append(bytes((len(label),)) + label)
        at += 1 + len(label)
        dot = key.find(".")
        key = key[dot + 1 :] if dot >= 0 else ""
    out.append((0xC000 | origin_at).to_bytes(2, "big") if origin_at >= 0 else origin_wire)
    return b"".join(out), added


def finish(query: dns.message.Message, bodies: Sequence[bytes], now: Callable[[], float] = time.time) -> list[bytes]:
    """``bodies`` (from zone_messages) as the replies to ``query``: its ID, RD bit and question; TSIG-signed in
    sequence if the query was signed (the first MAC covers the query's, RFC 8945 §5.3.1)."""
    question = query.question[0]
    head = struct.pack("!HH", query.id, dns.flags.QR | dns.flags.AA | (query.flags & dns.flags.RD))
    qname = question.name.to_wire()  # the client's spelling of the origin (0x20): same length
    out = []
    ctx = None
    for i, body in enumerate(bodies):
        if i == 0:
            end = 12 + len(qname)
            data = head + body[4:12] + qname + question.rdtype.to_bytes(2, "big") + body[end + 2 :]
        else:
            data = head + body[4:]
        if query.had_tsig:
            data, ctx = _sign(query, data, ctx, int(now()))
        out.append(data)
    return out


def _sign(query: dns.message.Message, data: bytes, ctx: object, now: int) -> tuple[bytes, object]:
    key = query.keyring if isinstance(query.keyring, dns.tsig.Key) else None
    if key is None:
        key = dns.tsig.Key(query.keyname, query.keyring, query.keyalgorithm)
    unsigned = dns.rdtypes.ANY.TSIG.TSIG(
        dns.rdataclass.ANY, dns.rdatatype.TSIG, query.keyalgorithm, 0, FUDGE, b"", query.id, 0, b""
    )
    tsig, ctx = dns.tsig.sign(data, key, unsigned, now, query.mac if ctx is None else b"", ctx, True)
    rdata = tsig.to_wire()
    record = query.keyname.to_wire() + _FIXED.pack(dns.rdatatype.TSIG, dns.rdataclass.ANY, 0, len(rdata)) + rdata
    arcount = int.from_bytes(data[10:12], "big") + 1
    return data[:10] + arcount.to_bytes(2, "big") + data[12:] + record, ctx


def transfer_messages(query: dns.message.Message, records: Iterable[RecordLike]) -> list[bytes]:
    """The records as replies to ``query`` (AXFR or IXFR), in as few messages as fit, signed if it was."""
    question = query.question[0]
    return finish(query, zone_messages(question.name, records, question.rdtype))


def axfr_records(export: Export, body: Iterable[RecordLike]) -> Iterator[RecordLike]:
    """SOA, NS, the body, SOA: the full zone form (RFC 5936 §2.2; RFC 1995 §4 for an IXFR answered in full)."""
    soa, ns = export.apex()
    yield soa
    yield ns
    yield from body
    yield soa


def ixfr_records(soa_of: Callable[[int], Record], deltas: Sequence, current: int) -> Iterator[RecordLike]:
    """RFC 1995 §4 incremental form: SOA(new), then per version SOA(old), removed…, SOA(next), added…, SOA(new)."""
    yield soa_of(current)
    for delta in deltas:
        yield soa_of(delta.old)
        yield from delta.removed
        yield soa_of(delta.new)
        yield from delta.added
    yield soa_of(current)


def axfr_response(query: dns.message.Message, export: Export) -> list[bytes]:
    """Wire replies for a query of ``export``'s origin, from its records alone (no journal).

    AXFR and IXFR (the full zone, RFC 1995 §4) get SOA, every RR, SOA; a SOA query gets the SOA;
    anything else — another name, class or type, or a non-QUERY opcode — gets one REFUSED reply.
    """
    if refused_question(query, export.origin):
        return [rcode_reply(query, dns.rcode.REFUSED)]
    if query.question[0].rdtype == dns.rdatatype.SOA:
        return [soa_reply(query, export.apex()[0], export.origin)]
    return transfer_messages(query, axfr_records(export, export.records))


def refused_question(query: dns.message.Message, origin: dns.name.Name) -> bool:
    """Not one question for SOA, AXFR or IXFR of ``origin`` in class IN with opcode QUERY."""
    question = query.question[0] if len(query.question) == 1 else None
    return (
        question is None
        or query.opcode() != dns.opcode.QUERY
        or question.name != origin
        or question.rdclass != dns.rdataclass.IN
        or question.rdtype not in (dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.SOA)
    )


def soa_reply(query: dns.message.Message, soa: Record, origin: dns.name.Name) -> bytes:
    """The SOA as an authoritative answer (signed with the query's key if the query was signed)."""
    reply = dns.message.make_response(query)
    reply.flags |= dns.flags.AA
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA, soa.rdata, origin)
    reply.answer.append(dns.rrset.from_rdata(origin, soa.ttl, rdata))
    return reply.to_wire()


def rcode_reply(query: dns.message.Message, rcode: int) -> bytes:
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    return reply.to_wire()


def ixfr_serial(query: dns.message.Message) -> int | None:
    """The serial an IXFR query says the client has (its authority SOA), or None."""
    for rrset in query.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return rrset[0].serial
    return None
