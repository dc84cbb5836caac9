"""Sans-IO DNS wire handling for the hot path: question scan, reply scan, ID/TTL patching, UDP fitting."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

import dns.rcode

from .errors import MalformedQuery, ResolverGuardError

QR, AA, TC, RD, RA, AD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010
# plain ints from dnspython's numbers: the hot path ORs them into header flags
FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = (
    int(r) for r in (dns.rcode.FORMERR, dns.rcode.SERVFAIL, dns.rcode.NXDOMAIN, dns.rcode.NOTIMP, dns.rcode.REFUSED)
)
OPT, SOA, ANY = 41, 6, 255
OPT_EDE = 15  # the one EDNS option a stored reply keeps: it describes the answer, not the exchange
EDNS_PAYLOAD = 1232  # what the guard advertises, to clients and upstreams (DNS flag day 2020)
_HDR = struct.Struct("!HHHHHH")
_U16 = struct.Struct("!H")
_RR = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_U16X2 = struct.Struct("!HH")
_U32 = struct.Struct("!I")
_PLAIN = re.compile(r"[a-z0-9_*-]*\Z")  # label text that needs no escaping


class Unreadable(ResolverGuardError):
    """packet too short to carry a DNS header; dropped without an answer"""


class NotQuery(ResolverGuardError):
    """packet is a response, not a query; dropped so the guard never reflects"""


class NotImplementedOpcode(ResolverGuardError):
    """opcode other than QUERY"""

    rcode_hint = NOTIMP


class BadVersion(ResolverGuardError):
    """EDNS version other than 0: answered BADVERS (RFC 6891 6.1.3), before the cache"""


@dataclass(slots=True)
class Query:
    """One client query, scanned from the wire without building message objects.

    The fast path never needs the name as text: the cache and the remembered policy decisions are keyed
    on ``key`` (the question octets), so ``qname`` is only decoded when something asks for it.
    """

    data: bytes
    id: int
    flags: int
    qtype: int
    qclass: int
    qend: int  # offset just past the question
    edns: bool
    payload: int  # the client's UDP size: 512 without EDNS
    do: bool
    client: str  # client address (host only)
    tcp: bool
    key: bytes  # cache key: lowercased question plus the bits that change the answer (EDNS, DO, CD, AD)
    _qname: str | None = field(default=None, repr=False, compare=False)
    memo: bool = field(default=True, repr=False, compare=False)  # False: its answer must not be remembered

    @property
    def qname(self) -> str:
        """Lowercase text without the trailing dot; "" is the root (decoded on first use)."""
        if self._qname is None:
            self._qname = name_text(read_name(self.data, 12)[0])
        return self._qname


def cache_key(data: bytes, qend: int, flags: int, edns: bool, do: bool) -> bytes:
    """The question with its name lowercased (not QTYPE/QCLASS: 65 is "A"), plus one octet of EDNS/DO/CD/AD bits.

    AD in a query asks for the AD bit in the reply (RFC 6840 5.7): an AD=0 asker must not fix what AD=1 gets.
    """
    bits = (edns << 3) | (do << 2) | (bool(flags & CD) << 1) | bool(flags & AD)
    return data[12 : qend - 4].lower() + data[qend - 4 : qend] + _BITS[bits]


_BITS = [bytes((i,)) for i in range(16)]


def name_end(data: bytes, pos: int) -> int:
    """Check an uncompressed name at pos by the rules of read_name, without copying labels; return its end."""
    start, size = pos, len(data)
    while True:
        if pos >= size:
            raise MalformedQuery("name runs past the end of the packet")
        n = data[pos]
        if n == 0:
            return pos + 1
        if n > 63:
            raise MalformedQuery("compressed or over-long label in the question")
        if pos - start + n + 2 > 255:  # read_name's total: 1 + the labels so far + this one
            raise MalformedQuery("name longer than 255 octets")
        pos += n + 1


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
    # the fast path needs plain labels: none empty, none holding a "." (that one must be escaped)
    if _PLAIN.match(text.replace(".", "")) and all(labels) and text.count(".") == len(labels) - 1:
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
        pos = name_end(data, 12)
        qtype, qclass = _U16X2.unpack_from(data, pos)
        qend = pos + 4
        edns, payload, do = False, 512, False
        pos = qend
        for i in range(an + ns + ar):
            owner, pos = pos, skip_name(data, pos)
            rtype, rclass, ttl, rdlen = _RR.unpack_from(data, pos)
            if rtype == OPT and i >= an + ns:
                if edns or pos != owner + 1:  # a second OPT, or an owner other than the root
                    raise MalformedQuery("bad OPT record")
                edns, payload, do = True, max(512, rclass), bool(ttl & 0x8000)
                if ttl & 0x00FF0000:
                    raise BadVersion()
            pos += 10 + rdlen
        if pos > len(data):
            raise MalformedQuery("record runs past the end of the packet")
    except (struct.error, IndexError) as exc:
        raise MalformedQuery("truncated packet") from exc
    key = cache_key(data, qend, flags, edns, do)
    return Query(data, qid, flags, qtype, qclass, qend, edns, payload, do, client, tcp, key)


def opt_record(do: bool, ede: tuple[int, str] | None = None, ext_rcode: int = 0) -> bytes:
    """The guard's own OPT record: payload 1232, version 0, DO echoed, optionally one EDE (RFC 8914)."""
    rdata = b""
    if ede is not None:
        text = ede[1].encode("utf-8")[:300]
        rdata = _U16X2.pack(OPT_EDE, 2 + len(text)) + _U16.pack(ede[0]) + text
    ttl = (ext_rcode << 24) | (0x8000 if do else 0)
    return b"\x00" + _RR.pack(OPT, EDNS_PAYLOAD, ttl, len(rdata)) + rdata


def _query_opt(data: bytes) -> tuple[bool, bool]:
    """Best effort for replies to unparsable queries: (has an OPT record, its DO bit)."""
    try:
        _, _, qd, an, ns, ar = _HDR.unpack_from(data)
        pos = 12
        for _ in range(qd):
            pos = skip_name(data, pos) + 4
        for i in range(an + ns + ar):
            pos = skip_name(data, pos)
            rtype, _, ttl, rdlen = _RR.unpack_from(data, pos)
            if rtype == OPT and i >= an + ns:
                return True, bool(ttl & 0x8000)
            pos += 10 + rdlen
    except (struct.error, IndexError, MalformedQuery):
        pass
    return False, False


def error_reply(data: bytes, rcode: int) -> bytes | None:
    """A header-only (plus question, when readable) reply with rcode, OPT if the query had one; None if no header."""
    if len(data) < 12:
        return None
    qid, flags = _U16.unpack_from(data)[0], _U16.unpack_from(data, 2)[0]
    ra = 0 if rcode == NOTIMP else RA  # NOTIMP: not even recursion is on offer for this opcode
    flags = QR | (flags & 0x7900) | ra | (rcode & 0xF)  # opcode, RD kept
    question = b""
    if data[4:6] == b"\x00\x01":
        try:
            _, pos = read_name(data, 12)
            if pos + 4 <= len(data):
                question = data[12 : pos + 4]
        except MalformedQuery:
            pass
    edns, do = _query_opt(data)
    opt = opt_record(do) if edns else b""
    return _HDR.pack(qid, flags, 1 if question else 0, 0, 0, 1 if edns else 0) + question + opt


def reply_for(
    query: Query,
    flags_rcode: int,
    body: bytes = b"",
    counts: tuple[int, int, int] = (0, 0, 0),
    ede: tuple[int, str] | None = None,
) -> bytes:
    """A reply to query with the given rcode, the client's question, an optional body; OPT (and EDE) for EDNS."""
    flags = QR | (query.flags & 0x7910) | RA | flags_rcode
    if not query.edns:
        return _HDR.pack(query.id, flags, 1, *counts) + query.data[12 : query.qend] + body
    an, ns, ar = counts
    return (
        _HDR.pack(query.id, flags, 1, an, ns, ar + 1) + query.data[12 : query.qend] + body + opt_record(query.do, ede)
    )


def badvers_reply(data: bytes) -> bytes | None:
    """BADVERS (extended rcode 16: 1 in the OPT, 0 in the header) with an OPT of version 0 and no answer."""
    reply = error_reply(data, 0)
    if reply is not None and data[3] & 0x10:  # CD is echoed (RFC 4035 3.2.2), like in every other reply
        reply = reply[:3] + bytes((reply[3] | 0x10,)) + reply[4:]
    edns, do = _query_opt(data)
    if reply is None or not edns:
        return reply
    return reply[: -len(opt_record(do))] + opt_record(do, ext_rcode=1)


def with_id_and_question(reply: bytes, query: Query) -> bytes:
    """Re-address a stored reply to query: its ID, its RD bit and the client's own spelling of the question."""
    data, qend = query.data, query.qend  # the client's ID is data[:2]: no packing
    if (reply[2] ^ data[2]) & 0x01:  # RD is copied from the query (RFC 1035 4.1.1), even into a stored reply
        return data[:2] + bytes((reply[2] ^ 0x01,)) + reply[3:12] + data[12:qend] + reply[qend:]
    return data[:2] + reply[2:12] + data[12:qend] + reply[qend:]


@dataclass(slots=True)
class ReplyScan:
    """What the cache needs from a reply: rcode, TC, TTL offsets, the TTL to cache it for and the longest TTL."""

    rcode: int
    truncated: bool
    ttl_offsets: tuple[int, ...]
    ttl: int | None  # None: not cacheable (e.g. negative answer without SOA)
    top: int = 0  # the longest record TTL: above [cache] max_ttl the TTLs are capped


def _walk(data: bytes) -> tuple[int, int, list[int], list[int], int | None, tuple[int, int] | None]:
    """Walk every record of a reply once: flags, ANCOUNT, TTL offsets and TTLs (OPT aside), the RFC 2308 SOA TTL,
    and where the OPT record of the additional section is (its owner and type offsets)."""
    _, flags, qd, an, ns, ar = _HDR.unpack_from(data)
    pos = 12
    for _ in range(qd):
        pos = skip_name(data, pos) + 4
    offsets, ttls, soa_ttl, opt = [], [], None, None
    for i in range(an + ns + ar):
        owner, pos = pos, skip_name(data, pos)
        rtype, _, ttl, rdlen = _RR.unpack_from(data, pos)
        if rtype != OPT:
            offsets.append(pos + 4)
            ttls.append(ttl)
            if rtype == SOA and an <= i < an + ns and rdlen >= 4:
                (minimum,) = _U32.unpack_from(data, pos + 10 + rdlen - 4)
                soa_ttl = min(ttl, minimum)
        elif i >= an + ns and opt is None:
            opt = (owner, pos)
        pos += 10 + rdlen
    if pos > len(data):
        raise MalformedQuery("record runs past the end of the reply")
    return flags, an, offsets, ttls, soa_ttl, opt


def _scan(flags: int, an: int, offsets: list[int], ttls: list[int], soa_ttl: int | None) -> ReplyScan:
    rcode = flags & 0xF
    if rcode == NXDOMAIN or (rcode == 0 and an == 0):
        ttl = soa_ttl
    elif rcode == 0:
        ttl = min(ttls, default=None)
    else:
        ttl = None
    return ReplyScan(rcode, bool(flags & TC), tuple(offsets), ttl, max(ttls, default=0))


def scan_reply(data: bytes) -> ReplyScan:
    """Walk every record of a reply once, noting TTL offsets; RFC 2308 TTL for negative answers."""
    try:
        flags, an, offsets, ttls, soa_ttl, _ = _walk(data)
    except (struct.error, IndexError) as exc:
        raise MalformedQuery("truncated reply") from exc
    return _scan(flags, an, offsets, ttls, soa_ttl)


def patch_ttls(reply: bytes, offsets: tuple[int, ...], elapsed: int) -> bytes:
    """Count every TTL down by elapsed seconds (never below zero); elapsed -1 caps them at 30 (stale)."""
    if not elapsed or not offsets:
        return reply
    buf = bytearray(reply)
    unpack, pack = _U32.unpack_from, _U32.pack_into
    for off in offsets:
        (ttl,) = unpack(buf, off)
        pack(buf, off, min(ttl, 30) if elapsed < 0 else ttl - elapsed if ttl > elapsed else 0)
    return bytes(buf)


def fit_udp(reply: bytes, query: Query) -> bytes:
    """Never send more than the client can take over UDP.

    First without the optional records (RFC 2181 9: additional records, and the authority section of a positive
    answer), which needs no TC; only when the answer itself does not fit, cut to the question and set TC.
    """
    if len(reply) <= query.payload:
        return reply
    smaller = _without_optional(reply)
    if smaller is not None and len(smaller) <= query.payload:
        return smaller
    qid, flags = _U16.unpack_from(reply)[0], _U16.unpack_from(reply, 2)[0]
    # OPT: 1232 bytes, the client's DO bit echoed (RFC 3225)
    opt = (
        (b"\x00\x00\x29\x04\xd0\x00\x00" + (b"\x80" if query.do else b"\x00") + b"\x00\x00\x00") if query.edns else b""
    )
    return _HDR.pack(qid, flags | TC, 1, 0, 0, 1 if opt else 0) + query.data[12 : query.qend] + opt


def _without_optional(reply: bytes) -> bytes | None:
    """The reply with its additional records (the OPT kept) and, for a positive answer, its authority dropped."""
    try:
        qid, flags, qd, an, ns, ar = _HDR.unpack_from(reply)
        pos = 12
        for _ in range(qd):
            pos = skip_name(reply, pos) + 4
        for _ in range(an):
            pos = skip_name(reply, pos)
            pos += 10 + _RR.unpack_from(reply, pos)[3]
        answer_end = pos
        for _ in range(ns):
            pos = skip_name(reply, pos)
            pos += 10 + _RR.unpack_from(reply, pos)[3]
        authority_end, opt = pos, b""
        for _ in range(ar):
            start = pos
            pos = skip_name(reply, pos)
            rtype, _, _, rdlen = _RR.unpack_from(reply, pos)
            pos += 10 + rdlen
            if rtype == OPT:
                opt = reply[start:pos]
    except (struct.error, IndexError, MalformedQuery):
        return None
    if pos != len(reply):  # not what the counts say: no surgery, TC
        return None
    keep_ns = an == 0  # a negative answer needs its SOA (RFC 2308)
    body = reply[12 : authority_end if keep_ns else answer_end]
    return _HDR.pack(qid, flags, qd, an, ns if keep_ns else 0, 1 if opt else 0) + body + opt


def frame(msg: bytes) -> bytes:
    """TCP framing: a two-octet length prefix."""
    return _U16.pack(len(msg)) + msg


_QUESTIONLESS = frozenset((FORMERR, SERVFAIL, NOTIMP, REFUSED))


def reply_matches(reply: bytes, sent: bytes, qend: int) -> bool:
    """An upstream reply answers what we sent: same ID, QR set, identical question octets.

    Error replies may come without a question (RFC 6891 7, RFC 1035 4.1.1; NSD answers REFUSED so to classes it
    does not serve), and a truncated one (TC) may be cut before or inside it: same ID and QR are enough then
    (the source is the caller's to check). A question that is there must be ours.
    """
    if len(reply) < 12 or reply[:2] != sent[:2] or not reply[2] & 0x80:
        return False
    if reply[4:6] == b"\x00\x00":
        return reply[3] & 0xF in _QUESTIONLESS or bool(reply[2] & 0x02)
    if reply[4:6] != b"\x00\x01":
        return False
    if len(reply) >= qend:
        return reply[12:qend] == sent[12:qend]
    return bool(reply[2] & 0x02) and sent.startswith(reply[12:], 12)  # TC, cut inside the question


def with_question(reply: bytes, question: bytes) -> bytes:
    """A question-less reply (SERVFAIL, FORMERR, NOTIMP) given the question back, so it can be re-addressed to the client."""
    if reply[4:6] != b"\x00\x00":
        return reply
    return reply[:4] + b"\x00\x01" + reply[6:12] + question + reply[12:]


def forwarded(reply: bytes, cd: int = 0) -> tuple[bytes, ReplyScan | None]:
    """An upstream reply as a forwarder passes it on, and what the cache needs of it, in one walk (None: unreadable;
    then the reply goes on as it came, uncached). AA clear, RA set, CD as the client sent it (cd: the query's CD
    bit; RFC 4035 3.2.2, and it is in the cache key), no per-exchange EDNS options.

    Kept in the OPT: payload, version, DO and EDE; dropped: COOKIE, NSID, ECS, EXPIRE, padding and unknown
    options, which were the upstream's to us and would be replayed from the cache to every client. The reply is
    rebuilt only when something in it changes.
    """
    try:
        flags, an, offsets, ttls, soa_ttl, opt = _walk(reply)
    except (struct.error, IndexError, MalformedQuery):
        return reply, None
    clean = (flags & ~(AA | CD)) | RA | cd
    if opt is not None:
        owner, pos = opt
        _, rclass, ttl, rdlen = _RR.unpack_from(reply, pos)
        end, kept, opos = pos + 10 + rdlen, b"", pos + 10
        while opos + 4 <= end:
            code, olen = _U16X2.unpack_from(reply, opos)
            if code == OPT_EDE:
                kept += reply[opos : opos + 4 + olen]
            opos += 4 + olen
        if ttl & 0x7FFF or kept != reply[pos + 10 : end]:  # options to drop, or Z bits besides DO
            rr = reply[owner:pos] + _RR.pack(OPT, rclass, ttl & 0xFFFF8000, len(kept)) + kept
            shift = end - owner - len(rr)  # records after the OPT (a TSIG) move up
            offsets = [o - shift if o > owner else o for o in offsets]
            reply = reply[:2] + _U16.pack(clean) + reply[4:owner] + rr + reply[end:]
            return reply, _scan(flags, an, offsets, ttls, soa_ttl)
    if clean != flags:
        reply = reply[:2] + _U16.pack(clean) + reply[4:]
    return reply, _scan(flags, an, offsets, ttls, soa_ttl)


def clean_reply(reply: bytes, cd: int = 0) -> bytes:
    """forwarded() without the scan."""
    return forwarded(reply, cd)[0]


def cap_ttls(reply: bytes, offsets: tuple[int, ...], max_ttl: int) -> bytes:
    """No TTL above max_ttl: what the cache keeps is also what clients are told ([cache] max_ttl)."""
    buf = bytearray(reply)
    for off in offsets:
        if _U32.unpack_from(buf, off)[0] > max_ttl:
            _U32.pack_into(buf, off, max_ttl)
    return bytes(buf)
