"""The fast path gives byte-for-byte the answers of a general path built on dnspython; hypothesis-generated queries.

The fast path (wire.py, cache.py, the policy memo in pipeline.py) never builds message objects: it scans the
question, keys the cache and the remembered decisions on the question octets, patches ID, question and TTLs
into stored bytes. The general path below does the same jobs the slow, obvious way: dns.message.from_wire,
make_response, edit the Message, to_wire (records kept in wire order: one_rr_per_rrset).

Where the comparison is byte-for-byte: everything except name compression is canonical. dnspython compresses
every name it can, so the "upstream" replies fed to the cache and the relay are themselves rendered by
dnspython; re-rendering them after the general path's edits (ID, question spelling, TTLs) then gives the
same compression layout, and the comparison is exact. A reply compressed differently by some other server
would still be relayed unchanged by the fast path, but would not re-render identically, so it is not a
meaningful input for this comparison. The fuzz tests (test_fuzz_wire.py) cover hostile bytes.
"""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from resolverguard import answers, events, fastpath, wire
from resolverguard.cache import Cache
from resolverguard.config import Config
from resolverguard.fastpath import FastTable
from resolverguard.metrics import Metrics
from resolverguard.pipeline import build_pipeline
from resolverguard.reload import load_policy
from resolverguard.server import Server, UdpListener
from resolverguard.upstream import Upstream, UpstreamPool
from tests.polling import wait_until
from tests.twoparsers import both, dnslib_reads, dnslib_view

ROOT = Path(__file__).resolve().parents[2]
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CD = dns.flags.CD
# typo neighbours (blocked), overrides (NXDOMAIN, passthru, local data), protected and ordinary names
POLICY_NAMES = [
    "army.ml",
    "www.army.ml",
    "amry.mil",
    "gmial.com",
    "mail.gmial.com",
    "gmail.co",
    "phish.example",
    "a.phish.example",
    "ok.partner.example",
    "lookalike-mail.example",
    "x.lookalike.example",
    "army.mil",
    "mail.army.mil",
    "gmail.com",
    "mail.com",
    "example.org",
    "xn--gmal-nza.com",
]


# ------------------------------------------------------------------ generators


def _flip_case(label: bytes, mask: int) -> bytes:
    return bytes(c ^ 0x20 if 0x61 <= (c | 0x20) <= 0x7A and (mask >> i) & 1 else c for i, c in enumerate(label))


label_bytes = st.one_of(
    st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_*", min_size=1, max_size=20).map(
        str.encode
    ),
    st.binary(min_size=1, max_size=12),  # anything: dots, backslashes, spaces, high bytes (escaped as text)
)


@st.composite
def names(draw, pool: list[str] | None = None) -> dns.name.Name:
    """An absolute name: from pool (in random case) or random labels; always within 255 octets."""
    if pool is not None and draw(st.integers(0, 4)) > 0:  # mostly the pool: names that policy cares about
        labels = [lb.encode() for lb in draw(st.sampled_from(pool)).split(".")]
    else:
        labels = draw(st.lists(label_bytes, max_size=5))
    mask = draw(st.integers(0, 2**64 - 1))
    labels = [_flip_case(lb, mask >> (7 * i)) for i, lb in enumerate(labels)]
    try:
        return dns.name.Name([*labels, b""])
    except dns.name.NameTooLong:
        assume(False)
        raise


@st.composite
def queries(draw, pool: list[str] | None = None, qtypes=(1, 28, 15, 16, 65, 12, 33)) -> dns.message.Message:
    """A well-formed query as clients send it: any ID, RD/CD bits, EDNS with or without DO, payload."""
    q = dns.message.make_query(
        draw(names(pool)), draw(st.sampled_from(qtypes)), draw(st.sampled_from([1, 1, 1, 3, 255]))
    )
    q.id = draw(st.integers(0, 65535))
    q.flags = draw(st.sampled_from([0, dns.flags.RD, dns.flags.RD | CD, CD]))
    if draw(st.booleans()):
        q.use_edns(0, dns.flags.DO if draw(st.booleans()) else 0, draw(st.sampled_from([512, 1232, 1400, 4096])))
    return q


def _text(name: dns.name.Name) -> str:
    return "" if name == dns.name.root else name.to_text(omit_final_dot=True).lower()


def _respell(q: dns.message.Message, mask: int, qid: int) -> dns.message.Message:
    """The same question from another client: another ID, case and RD bit; same EDNS/DO/CD (the same key)."""
    name = q.question[0].name
    other = dns.message.from_wire(q.to_wire())
    other.id = qid
    other.flags ^= dns.flags.RD if mask & 1 else 0
    other.question = [
        dns.rrset.RRset(
            dns.name.Name([_flip_case(lb, mask >> (5 * i)) for i, lb in enumerate(name.labels)]),
            q.question[0].rdclass,
            q.question[0].rdtype,
        )
    ]
    return other


# ------------------------------------------------------------------ the general path


def general_key(q: dns.message.Message) -> bytes:
    """What identifies an answer: the question (case-folded) and the EDNS, DO, CD and AD bits."""
    question = q.question[0]
    bits = ((q.edns >= 0) << 3) | (bool(q.ednsflags & dns.flags.DO) << 2) | (bool(q.flags & CD) << 1)
    bits |= bool(q.flags & dns.flags.AD)
    return (
        question.name.canonicalize().to_wire() + struct.pack("!HH", question.rdtype, question.rdclass) + bytes([bits])
    )


def general_readdress(reply: bytes, client: dns.message.Message, elapsed: int = 0, max_ttl: int = 2**32) -> bytes:
    """A stored reply for the client: its ID, its spelling of the question, every TTL capped then counted down.

    one_rr_per_rrset keeps the records in wire order: dnspython's RRsets are sets, and a parse/render round
    trip may reorder the records of one RRset (order that RFC 2181 calls insignificant, but not bytes).
    """
    msg = dns.message.from_wire(reply, one_rr_per_rrset=True)
    msg.id = client.id
    msg.flags = (msg.flags & ~dns.flags.RD) | (client.flags & dns.flags.RD)  # RD echoes the query
    msg.question = [dns.rrset.RRset(client.question[0].name, client.question[0].rdclass, client.question[0].rdtype)]
    for section in (msg.answer, msg.authority, msg.additional):
        for rrset in section:
            rrset.ttl = max(0, min(rrset.ttl, max_ttl) - elapsed)
    return msg.to_wire(max_size=65535)


def general_truncate(reply: bytes, client: dns.message.Message) -> bytes:
    """RFC 2181 9: an over-long UDP reply first loses its additional records (OPT kept) and, if positive, its
    authority section; if that does not fit either (RFC 1035/6891) it becomes its header with TC, the question
    and (EDNS) an OPT of 1232 carrying the client's DO bit."""
    msg = dns.message.from_wire(reply)
    msg.additional = []
    if msg.answer:
        msg.authority = []
    smaller = msg.to_wire()
    if len(smaller) <= (max(512, client.payload) if client.edns >= 0 else 512):
        return smaller
    out = dns.message.Message(id=msg.id)
    out.flags = msg.flags | dns.flags.TC
    out.question = list(client.question)
    if client.edns >= 0:
        out.use_edns(0, client.ednsflags & dns.flags.DO, 1232)  # the DO bit echoed (RFC 3225)
    return out.to_wire()


def general_error(data: bytes, rcode: int, copy_cd: bool = False, ra: bool | None = None) -> bytes:
    """make_response with the rcode, RA (but on NOTIMP), an OPT of 1232 with DO echoed for EDNS; CD kept if asked."""
    q = dns.message.from_wire(data)
    r = dns.message.make_response(q, recursion_available=rcode != wire.NOTIMP if ra is None else ra)
    if q.edns >= 0:
        r.use_edns(0, q.ednsflags & dns.flags.DO, 1232)
    else:
        r.use_edns(False)
    r.set_rcode(rcode)
    if copy_cd:
        r.flags |= q.flags & CD
    return r.to_wire()


def upstream_reply(q: dns.message.Message, draw) -> tuple[bytes, int]:
    """A reply as an upstream renders it (dnspython compression): positive, CNAME chain or NXDOMAIN+SOA."""
    r = dns.message.make_response(q)
    r.flags |= dns.flags.RA
    name, IN = q.question[0].name, dns.rdataclass.IN
    kind = draw(st.sampled_from(["a", "cname", "nxdomain", "nodata"]))
    ttls = [draw(st.integers(1, 90_000)) for _ in range(3)]
    if kind == "a":
        addrs = [f"192.0.2.{i}" for i in range(1, draw(st.integers(1, 40)) + 1)]
        r.answer.append(dns.rrset.from_text_list(name, ttls[0], IN, "A", addrs))
    elif kind == "cname":
        target = dns.name.from_text("target.example.net.")
        r.answer.append(dns.rrset.from_text(name, ttls[0], IN, "CNAME", target.to_text()))
        r.answer.append(dns.rrset.from_text(target, ttls[1], IN, "A", "198.51.100.7"))
        r.authority.append(dns.rrset.from_text("example.net.", ttls[2], IN, "NS", "ns.example.net."))
    else:
        if kind == "nxdomain":
            r.set_rcode(dns.rcode.NXDOMAIN)
        soa = f"ns.example.net. hostmaster.example.net. 1 3600 600 86400 {ttls[1]}"
        r.authority.append(dns.rrset.from_text("example.net.", ttls[0], IN, "SOA", soa))
    reply = r.to_wire(max_size=65535)  # as over TCP: fit_udp decides what a UDP client gets
    cached_for = min(ttls[:2]) if kind in ("cname", "nxdomain", "nodata") else ttls[0]
    if kind == "cname":
        cached_for = min(ttls)
    return reply, min(cached_for, 86_400)


# ------------------------------------------------------------------ properties


@PROPS
@given(queries(POLICY_NAMES))
def test_question_scan_matches_dnspython(q):
    data = q.to_wire()
    query = wire.parse_query(data, "192.0.2.1", False)
    question = q.question[0]
    assert (query.id, query.flags, query.qtype, query.qclass) == (q.id, q.flags, question.rdtype, question.rdclass)
    assert query.qend == 12 + len(question.name.to_wire()) + 4
    assert (query.edns, query.do) == (q.edns >= 0, bool(q.ednsflags & dns.flags.DO))
    assert query.payload == (max(512, q.payload) if q.edns >= 0 else 512)
    assert query.key == general_key(q)  # byte-for-byte: the cache and policy memo key
    assert query.qname == _text(question.name)  # decoded lazily, only when policy needs the text


@PROPS
@given(queries(POLICY_NAMES), st.integers(0, 2**64 - 1), st.integers(0, 65535))
def test_same_question_other_spelling_has_the_same_key(q, mask, qid):
    other = _respell(q, mask, qid)
    a, b = (wire.parse_query(m.to_wire(), "c", False) for m in (q, other))
    assert a.key == b.key and a.qname == b.qname


@PROPS
@given(queries(POLICY_NAMES, qtypes=(1,)), st.integers(0, 2**64 - 1), st.integers(0, 65535), st.data())
def test_cache_hit_equals_reparsed_and_rerendered_reply(q, mask, qid, data):
    now = [1000.0]
    cache = Cache(100, clock=lambda: now[0])
    reply, ttl = upstream_reply(q, data.draw)
    assert cache.put(wire.parse_query(q.to_wire(), "c", False), reply)
    elapsed = data.draw(st.integers(0, ttl - 1))
    now[0] += elapsed + data.draw(st.floats(0, 0.99))
    client = _respell(q, mask, qid)
    hit = cache.get(wire.parse_query(client.to_wire(), "c", False))
    assert hit == general_readdress(reply, client, elapsed, cache.max_ttl)


@PROPS
@given(queries(POLICY_NAMES, qtypes=(1,)), st.integers(0, 2**64 - 1), st.integers(0, 65535), st.data())
def test_relayed_upstream_reply_equals_rerendered_reply(q, mask, qid, data):
    # upstream.py relays with wire.with_id_and_question: the upstream saw our ID and (0x20) spelling
    reply, _ = upstream_reply(q, data.draw)
    client = _respell(q, mask, qid)
    relayed = wire.with_id_and_question(reply, wire.parse_query(client.to_wire(), "c", False))
    assert relayed == general_readdress(reply, client)


@PROPS
@given(queries(POLICY_NAMES, qtypes=(1,)), st.data())
def test_udp_fitting_equals_dnspython_truncation(q, data):
    reply, _ = upstream_reply(q, data.draw)
    query = wire.parse_query(q.to_wire(), "c", False)
    fitted = wire.fit_udp(reply, query)
    if len(reply) <= query.payload:
        assert fitted == reply
    else:
        assert fitted == general_truncate(reply, q)
        assert len(fitted) <= query.payload


@PROPS
@given(
    queries(POLICY_NAMES),
    st.sampled_from([0, 1, 2, 4]),
    st.booleans(),
    st.sampled_from([wire.FORMERR, wire.SERVFAIL, wire.NOTIMP, wire.REFUSED]),
)
def test_error_replies_equal_make_response(q, opcode, no_question, rcode):
    q.set_opcode(opcode)
    if no_question:
        q.question = []
    data = q.to_wire()
    assert wire.error_reply(data, rcode) == general_error(data, rcode)
    if opcode == 0 and not no_question:
        assert wire.reply_for(wire.parse_query(data, "c", False), rcode) == general_error(
            data, rcode, copy_cd=True, ra=True
        )


# ------------------------------------------------------------------ policy: remembered decisions vs fresh ones


@pytest.fixture(scope="module", params=["nxdomain", "sink"])
def guard(request):
    cfg = Config(
        zones_dir=str(ROOT / "zones"),
        protect=("army.mil", "gmail.com"),
        typo_action=request.param,
        allow_clients=("127.0.0.0/8", "::1/128", "192.0.2.0/24"),
    )  # 192.0.2.25: an override's client-ip rule
    policy = load_policy(cfg)
    pool = UpstreamPool([Upstream("127.0.0.1", 9)])  # never used: answer_now does not forward
    pipeline = build_pipeline(cfg, lambda: policy, Cache(1000), pool, Metrics(CollectorRegistry()))
    sink = answers.Sink(cfg.sink_ipv4, cfg.sink_ipv6 or None, cfg.sink_mail_host, cfg.sink_ttl)
    return pipeline, policy, sink


def general_policy_answer(policy, sink, q: dns.message.Message, client: str) -> tuple[str, bytes | None]:
    """Decide from dnspython's reading of the question, render from scratch; ("forward", None) to forward."""
    question = q.question[0]
    decision = policy.decide(_text(question.name), question.rdtype, client)
    if decision.action == "forward":
        return "forward", None
    qend = 12 + len(question.name.to_wire()) + 4
    query = wire.Query(
        q.to_wire(),
        q.id,
        q.flags,
        question.rdtype,
        question.rdclass,
        qend,
        q.edns >= 0,
        max(512, q.payload) if q.edns >= 0 else 512,
        bool(q.ednsflags & dns.flags.DO),
        client,
        False,
        b"",
        _text(question.name),
    )
    return decision.outcome, answers.render(decision, query, sink)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queries(POLICY_NAMES, qtypes=(1, 28, 15, 16, 65)), st.sampled_from(["127.0.0.1", "192.0.2.25", "::1"]))
def test_policy_fast_path_equals_fresh_decision_and_render(guard, q, client):
    # One pipeline for all examples: most of them are answered from remembered decisions and replies
    # (keyed on the question octets), re-addressed to this client's ID and spelling.
    pipeline, policy, sink = guard
    parsed = wire.parse_query(q.to_wire(), client, False)
    answer = pipeline.answer_now(parsed)
    outcome, expected = general_policy_answer(policy, sink, q, client)
    odd_class = q.question[0].rdclass not in (dns.rdataclass.IN, dns.rdataclass.CH)  # refused before policy
    if odd_class or (outcome == "forward" and not q.flags & dns.flags.RD):  # RD=0, nothing held: not forwarded
        outcome, expected = "refused", wire.reply_for(parsed, wire.REFUSED)
    event(outcome)  # --hypothesis-show-statistics: blocked_typo, blocked_override, passthru, forward ...
    if outcome == "forward":
        assert answer is None  # nothing cached: the forwarder would get it
    else:
        assert answer is not None and answer.outcome == outcome
        assert answer.reply == expected


# ------------------------------------------------------------------ the UDP fast path: remembered replies


@pytest.fixture(scope="module", params=["python", "compiled"])
def udp_guard(request):
    """A Server on a loopback UDP socket, read by calling its listener directly (no event loop): a cache and
    a fast table on one fake clock, and a client socket."""
    if request.param == "compiled" and not fastpath.compiled():
        pytest.skip("compiled loop not built (or RESOLVERGUARD_PURE set)")
    cfg = Config(zones_dir=str(ROOT / "zones"), protect=("army.mil", "gmail.com"))
    policy = load_policy(cfg)
    now = [1000.0]
    clock = lambda: now[0]  # noqa: E731
    cache, metrics = Cache(10_000, clock=clock), Metrics(CollectorRegistry())
    pipeline = build_pipeline(cfg, lambda: policy, cache, UpstreamPool([Upstream("127.0.0.1", 9)]), metrics)
    fast = FastTable(metrics, lambda: policy, pipeline.unthrottled, pure=request.param == "python", clock=clock)
    server = Server(pipeline, metrics, fast=fast)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    listener = UdpListener(server, sock)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    yield server, listener, cache, now, client, policy
    client.close()
    listener.close()


def _exchange(listener, client, data: bytes) -> bytes:
    """Send one datagram, let the listener read until the reply is back."""
    client.sendto(data, listener.sock.getsockname())

    def reply() -> bytes | None:
        listener.readable()
        try:
            return client.recv(65535)
        except BlockingIOError:
            return None

    return wait_until(reply, what="the reply")


@PROPS
@given(queries(qtypes=(1, 28, 15)), st.integers(0, 2**64 - 1), st.integers(0, 65535), st.data())
def test_udp_fast_path_equals_general_path_as_ttls_count_down(udp_guard, q, mask, qid, data):
    # A cached reply asked for again and again, by other IDs and spellings: the first ask goes through the
    # pipeline and is remembered, the next ones within the second come from the fast table, and once the clock
    # passes a second boundary the fast table counts the TTLs down from its template (the pipeline does, for a
    # reply cut to fit). Every reply equals the general path's (dnspython re-rendering with the TTLs counted
    # down, RFC 2181 truncation).
    server, listener, cache, now, client, policy = udp_guard
    question = q.question[0]
    assume(policy.decide(_text(question.name), question.rdtype, "127.0.0.1").action == "forward")
    assume(question.rdclass in (dns.rdataclass.IN, dns.rdataclass.CH))  # other classes are refused before the cache
    # An earlier example's remembered reply for the same octets would still be a right answer within its TTL
    # (as if the cache had kept it), but not the reply this example stores and compares with.
    server.fast.entries.clear()
    reply, ttl = upstream_reply(q, data.draw)
    assert cache.put(wire.parse_query(q.to_wire(), "127.0.0.1", False), reply)
    stored, since, asked = now[0], 0.0, []
    answer = server.answer
    server.answer = lambda *args: (asked.append(args[0]), answer(*args))[1]  # counts the pipeline's answers
    try:
        for step in range(5):
            if step == 3:
                since += data.draw(st.integers(1, max(1, ttl - 2)), label="seconds later")
            elif step:
                since += data.draw(st.floats(0, 0.5), label="a moment later")
            now[0] = stored + since
            if now[0] - stored >= ttl:  # as the clock reads it (stored + 0.9999999999999999 is stored + 1.0)
                break  # expired: the forwarder's business, not this comparison's
            client_q = _respell(q, mask, (qid + step) % 65536)
            got = _exchange(listener, client, client_q.to_wire())
            expected = general_readdress(reply, client_q, int(now[0] - stored), cache.max_ttl)
            if len(expected) > (max(512, client_q.payload) if client_q.edns >= 0 else 512):
                expected = general_truncate(expected, client_q)
            assert got == expected
    finally:
        server.answer = answer
    event(f"pipeline answered {len(asked)}")
    assert asked  # the first ask, at least, went through the pipeline


# ------------------------------------------------------------------ a second parser: dnslib


def _labels_of(qname: str) -> tuple[bytes, ...]:
    return tuple(lb.lower() for lb in dns.name.from_text(qname + "." if qname else ".").labels if lb)


@PROPS
@given(queries(POLICY_NAMES))
def test_question_scan_matches_dnslib(q):
    assume(dnslib_reads(q.question[0].name.labels))
    data = q.to_wire()
    query = wire.parse_query(data, "192.0.2.1", False)
    view = dnslib_view(data)
    assert view is not None
    assert (view["id"], view["qr"], view["opcode"]) == (query.id, 0, 0)
    assert view["question"] == [(_labels_of(query.qname), query.qtype, query.qclass)]
    assert view["edns"] == ((query.payload, query.do) if query.edns else None)


@PROPS
@given(queries(POLICY_NAMES, qtypes=(1,)), st.integers(0, 2**64 - 1), st.integers(0, 65535), st.data())
def test_cache_hit_relay_and_fit_read_the_same_in_dnspython_and_dnslib(q, mask, qid, data):
    assume(dnslib_reads(q.question[0].name.labels))
    now = [1000.0]
    cache = Cache(100, clock=lambda: now[0])
    reply, ttl = upstream_reply(q, data.draw)
    assert cache.put(wire.parse_query(q.to_wire(), "c", False), reply)
    elapsed = data.draw(st.integers(0, ttl - 1))
    now[0] += elapsed
    client = _respell(q, mask, qid)
    query = wire.parse_query(client.to_wire(), "c", False)
    question = [(_labels_of(query.qname), client.question[0].rdtype, client.question[0].rdclass)]
    hit, relayed = cache.get(query), wire.with_id_and_question(reply, query)
    for patched in (hit, relayed, wire.fit_udp(relayed, query)):
        view = both(patched)  # AssertionError if either library cannot read it, or they read it differently
        assert (view["id"], view["qr"], view["question"]) == (qid, 1, question)
    # the hit's TTLs, counted down in place, read by both libraries as the general path's re-rendered reply
    assert both(hit) == both(general_readdress(reply, client, elapsed, cache.max_ttl))


# ------------------------------------------------------------------ blocks with the event log on


@pytest.fixture(scope="module", params=["python", "compiled"])
def logged_udp_guard(request, tmp_path_factory):
    """udp_guard's set-up with the event log on (to a file) and the sink action: blocks are remembered with
    their event, and the fast path hands each lookup it answers back to the log."""
    if request.param == "compiled" and not fastpath.compiled():
        pytest.skip("compiled loop not built (or RESOLVERGUARD_PURE set)")
    cfg = Config(zones_dir=str(ROOT / "zones"), protect=("army.mil", "gmail.com"), typo_action="sink")
    policy = load_policy(cfg)
    metrics = Metrics(CollectorRegistry())
    path = tmp_path_factory.mktemp("events") / "events.jsonl"
    events.setup_events(str(path), metrics)
    pipeline = build_pipeline(cfg, lambda: policy, Cache(1000), UpstreamPool([Upstream("127.0.0.1", 9)]), metrics)
    server = Server(
        pipeline, metrics, fast=FastTable(metrics, lambda: policy, pipeline.unthrottled, pure=request.param == "python")
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    listener = UdpListener(server, sock)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    sink = answers.Sink(cfg.sink_ipv4, cfg.sink_ipv6 or None, cfg.sink_mail_host, cfg.sink_ttl)
    yield server, listener, client, policy, sink, path, [0]
    events.stop_events()
    client.close()
    listener.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queries(POLICY_NAMES, qtypes=(1, 28, 15)), st.integers(0, 2**64 - 1), st.integers(0, 65535))
def test_logged_blocks_through_the_fast_path_equal_a_fresh_render_and_each_writes_its_event(
    logged_udp_guard, q, mask, qid
):
    # The first ask goes through the pipeline (which logs it and remembers the block with its event), the
    # next ones are answered by the loop, which hands them back: every reply is the general path's, and
    # every lookup is one event line naming its client and the question as asked.
    server, listener, client, policy, sink, path, written = logged_udp_guard
    question = q.question[0]
    assume(question.rdclass in (1, 3))  # other classes are refused before the policy (stage sanity)
    decision = policy.decide(_text(question.name), question.rdtype, "127.0.0.1")
    assume(decision.action != "forward")
    server.fast.entries.clear()  # an earlier example may have remembered the same octets
    asked, answer = [], server.answer
    server.answer = lambda *args: (asked.append(args[0]), answer(*args))[1]  # counts the pipeline's answers
    try:
        for step in range(4):
            client_q = _respell(q, mask, (qid + step) % 65536)
            got = _exchange(listener, client, client_q.to_wire())
            _, expected = general_policy_answer(policy, sink, client_q, "127.0.0.1")
            if len(expected) > (max(512, client_q.payload) if client_q.edns >= 0 else 512):
                expected = general_truncate(expected, client_q)
            assert got == expected
    finally:
        server.answer = answer
    assert len(asked) == 1  # the first ask; the loop answered the other three, and handed them back
    written[0] += 4
    lines = wait_until(
        lambda: (found := path.read_text().splitlines()) and len(found) >= written[0] and found,
        what="an event line per lookup",
    )
    assert len(lines) == written[0]
    for line in lines[-4:]:
        event = json.loads(line)
        assert (event["event"], event["client"], event["qname"]) == ("block", "127.0.0.1", _text(question.name))
        assert event["outcome"] == decision.outcome
