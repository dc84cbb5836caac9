"""Fuzzing in process: wire.parse_query and Server.answer on hostile bytes never raise, and answer as RFC 1035 asks.

Two properties, each on random bytes and on mutated well-formed queries (names the policy blocks, overrides
and forwards; EDNS; extra records; then bytes flipped, cut, inserted, counts rewritten):
- parse_query raises nothing but its own four errors, and when dnspython can read the same bytes the two agree;
- Server.answer (the real pipeline, a stub forwarder) sends exactly one thing per message: nothing for an
  unreadable header or a response, FORMERR or NOTIMP when the header is readable but the query is not,
  otherwise a reply dnspython can parse, with the client's ID, never larger than the client's UDP size;
  and resolverguard_internal_errors_total stays 0.
The socket-level fuzz is tests/integration/test_hostile.py; the long run is bench/soak.py.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.rcode
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from resolverguard import wire
from resolverguard.cache import Cache
from resolverguard.config import Config
from resolverguard.errors import MalformedQuery
from resolverguard.metrics import Metrics
from resolverguard.pipeline import Answer, build_pipeline
from resolverguard.reload import load_policy
from resolverguard.server import Server
from resolverguard.upstream import Upstream, UpstreamPool
from tests.twoparsers import both, dnslib_reads, dnslib_view

ROOT = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OWN_ERRORS = (wire.Unreadable, wire.NotQuery, wire.NotImplementedOpcode, wire.BadVersion, MalformedQuery)
# blocked (typo), override NXDOMAIN, local data, passthru, forwarded, the root
NAMES = [
    b"army.ml",
    b"www.army.ml",
    b"gmial.com",
    b"phish.example",
    b"lookalike-mail.example",
    b"ok.partner.example",
    b"army.mil",
    b"mail.com",
    b"example.org",
    b"",
]


def _name(labels: list[bytes]) -> bytes:
    return b"".join(bytes([len(lb) & 0xFF]) + lb for lb in labels) + b"\x00"


@st.composite
def queries(draw) -> bytes:
    """A query as a client might build it (sometimes oddly), before any mutation."""
    if draw(st.booleans()):
        text = draw(st.sampled_from(NAMES))
        labels = [lb for lb in text.split(b".") if lb]
        if draw(st.booleans()):
            labels = [bytes(c ^ 0x20 if 0x61 <= c <= 0x7A else c for c in lb) for lb in labels]  # upper case
    else:
        labels = draw(st.lists(st.binary(min_size=1, max_size=70), max_size=6))
    qtype = draw(st.sampled_from([1, 28, 15, 16, 255, 252, 251, 65, 0, 41, 65535]))
    qclass = draw(st.sampled_from([1, 1, 1, 3, 255, 254]))
    flags = draw(st.sampled_from([0x0100, 0x0000, 0x0110, 0x0300, 0x2100, 0x8180, 0x7800]))
    extra = b""
    arcount = 0
    if draw(st.booleans()):  # OPT: payload, DO, options (length maybe lying)
        payload = draw(st.sampled_from([0, 511, 512, 1232, 4096, 65535]))
        ttl = draw(st.sampled_from([0, 0x8000, 0x01000000]))
        rdata = draw(st.sampled_from([b"", b"\x00\x0a\x00\x08" + b"c" * 8, b"\x00\x0a\x00\x09" + b"c" * 8]))
        owner = draw(st.sampled_from([b"\x00", b"\x00", b"\x01a\x00"]))
        extra += owner + struct.pack("!HHIH", 41, payload, ttl, len(rdata)) + rdata
        arcount += 1
    for _ in range(draw(st.integers(0, 2))):  # other additional records, rdata not always well-formed
        rdata = draw(st.binary(max_size=8))
        extra += draw(st.sampled_from([b"\x00", b"\xc0\x0c", b"\x01x\x00"])) + struct.pack("!HHIH", 1, 1, 0, len(rdata))
        extra += rdata
        arcount += 1
    qd = draw(st.sampled_from([1, 1, 1, 0, 2]))
    head = struct.pack("!HHHHHH", draw(st.integers(0, 65535)), flags, qd, 0, 0, arcount)
    return head + _name(labels) + struct.pack("!HH", qtype, qclass) + extra


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(queries()))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete", "count", "pointer"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 4))]
        elif op == "count" and len(data) >= 12:
            field = draw(st.sampled_from([4, 6, 8, 10]))
            data[field : field + 2] = struct.pack("!H", draw(st.sampled_from([0, 1, 2, 255, 65535])))
        elif op == "pointer":  # a compression pointer, possibly to itself
            data[pos:pos] = struct.pack("!H", 0xC000 | draw(st.sampled_from([pos, 12, 0, 0x3FFF])))
    return bytes(data)


hostile = st.one_of(st.binary(max_size=600), mutated(), queries())


@FUZZ
@given(hostile)
def test_parse_query_raises_only_its_own_errors_and_agrees_with_dnspython(data):
    try:
        query = wire.parse_query(data, "192.0.2.1", False)
    except OWN_ERRORS:
        return
    assert len(data) >= 12 and not data[2] & 0x80 and (data[2] >> 3) & 0xF == 0
    assert 12 < query.qend <= len(data) and query.payload >= 512
    try:
        msg = dns.message.from_wire(data)
    except dns.exception.DNSException:  # dnspython also reads every record's data, which the scan skips
        return
    assert (msg.id, len(msg.question)) == (query.id, 1)
    assert (msg.question[0].rdtype, msg.question[0].rdclass) == (query.qtype, query.qclass)
    assert _text(msg.question[0].name) == query.qname
    assert (msg.edns >= 0) == query.edns
    if query.edns:
        assert query.payload == max(512, msg.payload) and query.do == bool(msg.ednsflags & 0x8000)


@FUZZ
@given(queries())
def test_well_formed_queries_always_parse(data):
    (qd,) = struct.unpack_from("!H", data, 4)
    try:
        msg = dns.message.from_wire(data)
    except dns.exception.DNSException:
        return
    if qd == 1 and msg.opcode() == 0 and not data[2] & 0x80 and len(msg.question) == 1:
        assert wire.parse_query(data, "192.0.2.1", True).qname == _text(msg.question[0].name)


def _text(name: dns.name.Name) -> str:
    return "" if name == dns.name.root else name.to_text(omit_final_dot=True).lower()


class _StubForwarder:
    """Stands in for the upstream pool: every forwarded query gets an empty NOERROR."""

    async def resolve(self, query: wire.Query) -> Answer:
        return Answer(wire.reply_for(query, 0), "forwarded")


@pytest.fixture(scope="module")
def harness():
    cfg = Config(zones_dir=str(ROOT / "zones"), protect=("army.mil", "gmail.com"), typo_action="nxdomain")
    policy = load_policy(cfg)
    metrics = Metrics(CollectorRegistry())
    pool = UpstreamPool([Upstream("127.0.0.1", 9)])  # never used: the forwarder is a stub
    pipeline = build_pipeline(cfg, lambda: policy, Cache(1000), pool, metrics)
    pipeline.forwarder = _StubForwarder()
    server = Server(pipeline, metrics)
    loop = asyncio.new_event_loop()
    errors = _Errors()
    logging.getLogger("resolverguard").addHandler(errors)
    yield server, metrics, loop, errors
    logging.getLogger("resolverguard").removeHandler(errors)
    loop.close()


class _Errors(logging.Handler):
    """Collects ERROR records (a logged traceback means an exception reached the catch-all)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


def _answer(server: Server, loop: asyncio.AbstractEventLoop, data: bytes, tcp: bool) -> list:
    sent: list = []

    async def drive() -> None:
        server.answer(data, "127.0.0.1", tcp, sent.append)
        while server.inflight:
            await asyncio.wait(set(server.inflight))

    loop.run_until_complete(drive())
    return sent


@FUZZ
@given(hostile, st.booleans())
@example(b"\x00\x00(\x00\x00\x01" + bytes(11), False)  # UPDATE, zone section of type 0: NOTIMP
def test_server_answers_each_message_once_and_never_raises(harness, data, tcp):
    server, metrics, loop, errors = harness
    sent = _answer(server, loop, data, tcp)
    assert not errors.records, errors.records[0]
    assert metrics.registry.get_sample_value("resolverguard_internal_errors_total") == 0
    assert len(sent) == 1
    reply = sent[0]
    try:
        query = wire.parse_query(data, "127.0.0.1", tcp)
    except (wire.Unreadable, wire.NotQuery):
        assert reply is None  # no header to answer, or a response: never reflect
        return
    except wire.BadVersion:  # EDNS version > 0: BADVERS (extended rcode 16), OPT of version 0
        msg = dns.message.from_wire(reply)
        assert msg.id == int.from_bytes(data[:2], "big") and msg.rcode() == dns.rcode.BADVERS and msg.edns == 0
        return
    except (wire.NotImplementedOpcode, MalformedQuery) as exc:
        assert reply is not None and reply[:2] == data[:2] and reply[2] & 0x80
        assert reply[3] & 0xF == exc.rcode_hint  # NOTIMP or FORMERR
        assert len(reply) <= 512
        # Well-formed as a message: parsed with the opcode bits cleared, because dnspython also checks
        # UPDATE semantics (a zone section of type SOA) that a NOTIMP echo of the client's section lacks.
        dns.message.from_wire(reply[:2] + bytes([reply[2] & 0x87]) + reply[3:])
        return
    if reply is None:  # only a policy "drop" sends nothing; the repo zones have none
        pytest.fail("a readable query went unanswered")
    msg = dns.message.from_wire(reply)
    assert msg.id == query.id and msg.flags & 0x8000
    if not tcp:
        assert len(reply) <= query.payload


@FUZZ
@given(hostile)
def test_parse_query_agrees_with_dnslib(data):
    """A second, independent parser: whatever both the scan and dnslib read, they read the same."""
    try:
        query = wire.parse_query(data, "192.0.2.1", False)
    except OWN_ERRORS:
        return
    view = dnslib_view(data)
    if view is None:  # dnslib also reads every record (and refuses non-UTF-8 labels), which the scan skips
        return
    assert (view["id"], view["qr"], view["opcode"], len(view["question"])) == (query.id, 0, 0, 1)
    labels = tuple(lb.lower() for lb in dns.name.from_text(query.qname + "." if query.qname else ".").labels if lb)
    assert view["question"][0] == (labels, query.qtype, query.qclass)
    assert view["edns"] == ((query.payload, query.do) if query.edns else None)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile, st.booleans())
def test_server_replies_read_the_same_in_dnspython_and_dnslib(harness, data, tcp):
    server, metrics, loop, errors = harness
    try:
        query = wire.parse_query(data, "127.0.0.1", tcp)
    except OWN_ERRORS:
        return
    [reply] = _answer(server, loop, data, tcp)
    if reply is None or not dnslib_reads(dns.name.from_text(query.qname + "." if query.qname else ".").labels):
        return
    view = both(reply)
    assert view["id"] == query.id and view["qr"] == 1
