"""Sans-IO DNS wire handling for the hot path: question scan, reply scan, ID/TTL patching, UDP fitting."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from .errors import MalformedQuery, ResolverGuardError

QR, TC, RD, CD = 0x8000, 0x0200, 0x0100, 0x0010
FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 1, 2, 3, 4, 5
OPT, SOA, ANY = 41, 6, 255
_HDR = struct.Struct("!HHHHHH")
_U16 = struct.Struct("!H")
_RR = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_PLAIN = re.compile(r"[a-z0-9_*-]*\Z")  # label text that needs no escaping


class Unreadable(ResolverGuardError):
    """packet too short to carry a DNS header; dropped without an answer"""


class NotQuery(ResolverGuardError):
    """packet is a response, not a query; dropped so the guard never reflects"""


class NotImplementedOpcode(ResolverGuardError):
    """opcode other than QUERY"""

    rcode_hint = NOTIMP


@dataclass(slots=True)
class Query:
    """One client query, scanned from the wire without building message objects."""

    data: bytes
    id: int
    flags: int
    qname: str  # lowercase text without the trailing dot; "" is the root
    qtype: int
    qclass: int
    qend: int  # offset just past the question
    edns: bool
    payload: int  # the client's UDP size: 512 without EDNS
    do: bool
    client: str  # client address (host only)
    tcp: bool

    @property
    def key(self) -> bytes:
        """Cache key: lowercased question plus the bits that change the answer (EDNS, DO, CD)."""
        bits = (self.edns << 2) | (self.do << 1) | bool(self.flags & CD)
        return self.data[12 : self.qend].lower() + bytes((bits,))


def read_name(data: bytes, pos: int) -> tuple[list[bytes], int]:
    """Read an uncompressed name at pos; return its labels and the offset after it."""
    labels, total = [], 1
    while True:
        if pos >= len(data):
            raise MalformedQuery("name runs past the end of the packet")
        n = data[pos]
        if n == 0:
            return labels, pos + 1
        if n > 63:
            raise MalformedQuery("compressed or over-long label in the question")
        total += n + 1
        if total > 255:
            raise MalformedQuery("name longer than 255 octets")
        labels.append(data[pos + 1 : pos + 1 + n])
        pos += n + 1


def skip_name(data: bytes, pos: int) -> int:
    """Skip a possibly compressed name in a record; return the offset after it."""
    while True:
        n = data[pos]
        if n == 0:
            return pos + 1
        if n & 0xC0 == 0xC0:
            return pos + 2
        if n > 63:
            raise MalformedQuery("bad label type")
        pos += n + 1


def name_text(labels: list[bytes]) -> str:
    """Labels to lowercase presentation text without the trailing dot (escaped like dnspython)."""
    text = b".".join(labels).lower().decode("latin-1")
    if _PLAIN.match(text.replace(".", "")) and all(labels):
        return text
    return ".".join(_escape(lb.lower()) for lb in labels)


def _escape(label: bytes) -> str:
    out = []
    for b in label:
        c = chr(b)
        if c in '."\\()$;@':
            out.append("\\" + c)
        elif 0x21 <= b <= 0x7E:
            out.append(c)
        else:
            out.append(f"\\{b:03d}")
    return "".join(out)


def parse_query(data: bytes, client: str, tcp: bool) -> Query:
    """Scan a query: header, one question and the OPT record; raise on anything malformed."""
    if len(data) < 12:
        raise Unreadable()
    qid, flags, qd, an, ns, ar = _HDR.unpack_from(data)
    if flags & QR:
        raise NotQuery()
    if (flags >> 11) & 0xF != 0:
        raise NotImplementedOpcode()
    if qd != 1:
        raise MalformedQuery(f"qdcount {qd}")
    try:
        labels, pos = read_name(data, 12)
        qtype, qclass = struct.unpack_from("!HH", data, pos)
        qend = pos + 4
        edns, payload, do = False, 512, False
        pos = qend
        for i in range(an + ns + ar):
            pos = skip_name(data, pos)
            rtype, rclass, ttl, rdlen = _RR.unpack_from(data, pos)
            if rtype == OPT and i >= an + ns:
                if edns or data[pos - 1] != 0:
                    raise MalformedQuery("bad OPT record")
                edns, payload, do = True, max(512, rclass), bool(ttl & 0x8000)
            pos += 10 + rdlen
        if pos > len(data):
            raise MalformedQuery("record runs past the end of the packet")
    except (struct.error, IndexError) as exc:
        raise MalformedQuery("truncated packet") from exc
    return Query(data, qid, flags, name_text(labels), qtype, qclass, qend, edns, payload, do, client, tcp)


def error_reply(data: bytes, rcode: int) -> bytes | None:
    """A header-only (plus question, when readable) reply with rcode; None if no header."""
    if len(data) < 12:
        return None
    qid, flags = _U16.unpack_from(data)[0], _U16.unpack_from(data, 2)[0]
    flags = QR | (flags & 0x7900) | 0x0080 | (rcode & 0xF)  # opcode, RD kept; RA set
    question = b""
    if data[4:6] == b"\x00\x01":
        try:
            _, pos = read_name(data, 12)
            if pos + 4 <= len(data):
                question = data[12 : pos + 4]
        except MalformedQuery:
            pass
    return _HDR.pack(qid, flags, 1 if question else 0, 0, 0, 0) + question


def reply_for(query: Query, flags_rcode: int, body: bytes = b"", counts: tuple[int, int, int] = (0, 0, 0)) -> bytes:
    """A reply to query with the given rcode, the client's question and an optional body."""
    flags = QR | (query.flags & 0x7910) | 0x0080 | flags_rcode
    return _HDR.pack(query.id, flags, 1, *counts) + query.data[12 : query.qend] + body


def with_id_and_question(reply: bytes, query: Query) -> bytes:
    """Re-address a stored reply to query: its ID and the client's own spelling of the question."""
    return _U16.pack(query.id) + reply[2:12] + query.data[12 : query.qend] + reply[query.qend :]


@dataclass(slots=True)
class ReplyScan:
    """What the cache needs from a reply: rcode, TC, TTL offsets and the TTL to cache it for."""

    rcode: int
    truncated: bool
    ttl_offsets: tuple[int, ...]
    ttl: int | None  # None: not cacheable (e.g. negative answer without SOA)


def scan_reply(data: bytes) -> ReplyScan:
    """Walk every record of a reply once, noting TTL offsets; RFC 2308 TTL for negative answers."""
    try:
        _, flags, qd, an, ns, ar = _HDR.unpack_from(data)
        pos = 12
        for _ in range(qd):
            pos = skip_name(data, pos) + 4
        offsets, ttls, soa_ttl = [], [], None
        for i in range(an + ns + ar):
            pos = skip_name(data, pos)
            rtype, _, ttl, rdlen = _RR.unpack_from(data, pos)
            if rtype != OPT:
                offsets.append(pos + 4)
                ttls.append(ttl)
                if rtype == SOA and an <= i < an + ns and rdlen >= 4:
                    (minimum,) = struct.unpack_from("!I", data, pos + 10 + rdlen - 4)
                    soa_ttl = min(ttl, minimum)
            pos += 10 + rdlen
        if pos > len(data):
            raise MalformedQuery("record runs past the end of the reply")
    except (struct.error, IndexError) as exc:
        raise MalformedQuery("truncated reply") from exc
    rcode = flags & 0xF
    if rcode == NXDOMAIN or (rcode == 0 and an == 0):
        ttl = soa_ttl
    elif rcode == 0:
        ttl = min(ttls)
    else:
        ttl = None
    return ReplyScan(rcode, bool(flags & TC), tuple(offsets), ttl)


def patch_ttls(reply: bytes, offsets: tuple[int, ...], elapsed: int) -> bytes:
    """Count every TTL down by elapsed seconds (never below zero); elapsed -1 caps them at 30 (stale)."""
    if not elapsed or not offsets:
        return reply
    buf = bytearray(reply)
    for off in offsets:
        (ttl,) = struct.unpack_from("!I", buf, off)
        struct.pack_into("!I", buf, off, min(ttl, 30) if elapsed < 0 else max(0, ttl - elapsed))
    return bytes(buf)


def fit_udp(reply: bytes, query: Query) -> bytes:
    """Never send more than the client can take over UDP: cut to the question and set TC."""
    if len(reply) <= query.payload:
        return reply
    qid, flags = _U16.unpack_from(reply)[0], _U16.unpack_from(reply, 2)[0]
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00" if query.edns else b""  # OPT, 1232 bytes
    return _HDR.pack(qid, flags | TC, 1, 0, 0, 1 if opt else 0) + query.data[12 : query.qend] + opt


def frame(msg: bytes) -> bytes:
    """TCP framing: a two-octet length prefix."""
    return _U16.pack(len(msg)) + msg


def with_id(msg: bytes, qid: int) -> bytes:
    return _U16.pack(qid) + msg[2:]


def reply_matches(reply: bytes, sent: bytes, qend: int) -> bool:
    """An upstream reply answers what we sent: same ID, QR set, identical question octets."""
    return (
        len(reply) >= qend
        and reply[:2] == sent[:2]
        and reply[2] & 0x80 != 0
        and reply[4:6] == b"\x00\x01"
        and reply[12:qend] == sent[12:qend]
    )
