"""Malformed input over real sockets: crafted and random bytes on UDP and TCP never break the guard.

What must hold, for every input: no exception escapes (no Traceback in the guard's output,
resolverguard_internal_errors_total stays 0); FORMERR or NOTIMP when the header is readable, nothing otherwise
(never reflect: a response sent as a query is dropped); each kind counted in resolverguard_malformed_total;
and normal queries keep being answered throughout. The in-process fuzz (tests/unit/test_fuzz_wire.py) checks
each input's exact reply; bench/soak.py runs the same socket fuzz for a million inputs.
"""

from __future__ import annotations

import random
import socket
import struct
import sys
from pathlib import Path

import dns.message
import dns.rcode
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes import recv_exact  # noqa: E402
from hostile import (  # noqa: E402
    REPLIED,
    EchoUpstream,
    config,
    expected_kind,
    fuzz_message,
    scrape,
    seed,
    start_with_metrics,
    udp_exchange,
    wait_metric,
)

ROOT = Path(__file__).resolve().parents[2]


def q(name: str = "ok.example", qtype: str = "A", **kw) -> bytes:
    return dns.message.make_query(name, qtype, **kw).to_wire()


def with_counts(data: bytes, qd: int | None = None, ar: int | None = None) -> bytes:
    b = bytearray(data)
    if qd is not None:
        b[4:6] = struct.pack("!H", qd)
    if ar is not None:
        b[10:12] = struct.pack("!H", ar)
    return bytes(b)


def with_opcode(data: bytes, opcode: int, qr: bool = False) -> bytes:
    b = bytearray(data)
    b[2] = (b[2] & 0x07) | (opcode << 3) | (0x80 if qr else 0)
    return bytes(b)


HEADER_ONLY = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
QUESTION_END = b"\x00\x00\x01\x00\x01"
OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
CRAFTED = [  # (label, datagram, expected rcode or None for "no reply", malformed kind)
    ("empty datagram", b"", None, "unreadable"),
    ("5 bytes", b"\x12\x34\x01\x00\x00", None, "unreadable"),
    ("11 bytes", HEADER_ONLY[:11], None, "unreadable"),
    ("header only, qdcount 1", HEADER_ONLY, dns.rcode.FORMERR, "formerr"),
    ("question cut short", q()[:-3], dns.rcode.FORMERR, "formerr"),
    ("qdcount 0", with_counts(q(), qd=0), dns.rcode.FORMERR, "formerr"),
    ("qdcount 2", with_counts(q(), qd=2), dns.rcode.FORMERR, "formerr"),
    ("qdcount 65535", with_counts(q(), qd=65535), dns.rcode.FORMERR, "formerr"),
    ("compression pointer loop", HEADER_ONLY + b"\xc0\x0c\x00\x01\x00\x01", dns.rcode.FORMERR, "formerr"),
    ("pointer into the header", HEADER_ONLY + b"\xc0\x02\x00\x01\x00\x01", dns.rcode.FORMERR, "formerr"),
    ("label of 64", HEADER_ONLY + b"\x40" + b"a" * 64 + QUESTION_END, dns.rcode.FORMERR, "formerr"),
    ("reserved label type 0x80", HEADER_ONLY + b"\x81a" + QUESTION_END, dns.rcode.FORMERR, "formerr"),
    ("name of 320 octets", HEADER_ONLY + (b"\x3f" + b"a" * 63) * 5 + QUESTION_END, dns.rcode.FORMERR, "formerr"),
    ("two OPT records", with_counts(q(use_edns=0) + OPT, ar=2), dns.rcode.FORMERR, "formerr"),
    ("OPT with a non-root owner", with_counts(q() + b"\x01x" + OPT, ar=1), dns.rcode.FORMERR, "formerr"),
    ("OPT rdlength past the end", with_counts(q() + OPT[:-2] + b"\x00\x40", ar=1), dns.rcode.FORMERR, "formerr"),
    ("arcount 65535, no records", with_counts(q(), ar=65535), dns.rcode.FORMERR, "formerr"),
    ("opcode IQUERY", with_opcode(q(), 1), dns.rcode.NOTIMP, "notimp"),
    ("opcode STATUS", with_opcode(q(), 2), dns.rcode.NOTIMP, "notimp"),
    ("opcode NOTIFY", with_opcode(q(), 4), dns.rcode.NOTIMP, "notimp"),
    ("opcode UPDATE", with_opcode(q(), 5), dns.rcode.NOTIMP, "notimp"),
    ("opcode 15", with_opcode(q(), 15), dns.rcode.NOTIMP, "notimp"),
    (
        "a response sent as a query",
        dns.message.make_response(dns.message.make_query("ok.example", "A")).to_wire(),
        None,
        "response",
    ),
    ("a NOTIFY response", with_opcode(q(), 4, qr=True), None, "response"),
]
# A block is decided and rendered from the header and question alone: junk after them changes nothing.
BROKEN_RECORD_QUERY = with_counts(q("army.ml") + b"\x00" + struct.pack("!HHIH", 1, 1, 0, 3) + b"abc", ar=1)


@pytest.fixture
def guard(tmp_path, start_guard):
    up = EchoUpstream({"ok.example": "192.0.2.1"})  # answers whatever the guard forwards, however odd
    cfg = config(tmp_path, "timeout = 0.3\nservfail_after = 0.6\n")
    yield start_with_metrics(start_guard, "--config", cfg, "--upstream", up.address, "--protect", "army.mil")
    up.close()


def assert_healthy(guard, url: str) -> None:
    """Normal service over both transports, and no sign of an exception anywhere."""
    for tcp in (False, True):
        reply = guard.query("ok.example", "A", tcp=tcp)
        assert reply.rcode() == dns.rcode.NOERROR and reply.answer[0][0].to_text() == "192.0.2.1"
    assert scrape(url)["resolverguard_internal_errors_total"] == 0
    out = guard.output()
    assert "Traceback" not in out and "internal error" not in out and "Exception in callback" not in out, out[-3000:]


def test_crafted_udp(guard):
    guard, url = guard
    for label, data, rcode, kind in CRAFTED:
        metric = f'resolverguard_malformed_total{{kind="{kind}"}}'
        before = scrape(url)[metric]
        reply = udp_exchange(data, (guard.host, guard.port), timeout=0.5 if rcode is None else 3.0)
        if rcode is None:
            assert reply is None, f"{label}: a reply went out"
        else:
            assert reply is not None, f"{label}: no reply"
            assert reply[:2] == data[:2] and reply[2] & 0x80, label
            assert reply[3] & 0xF == rcode, f"{label}: rcode {reply[3] & 0xF}"
            if not reply[2] & 0x78:  # (dnspython reads an UPDATE's sections by other rules)
                dns.message.from_wire(reply)  # well-formed, question echoed only when readable
        assert wait_metric(url, metric, lambda v, b=before: v >= b + 1) == before + 1, f"{label}: {kind} not counted"
    reply = udp_exchange(BROKEN_RECORD_QUERY, (guard.host, guard.port), timeout=3.0)
    assert reply is not None and reply[3] & 0xF == dns.rcode.NXDOMAIN
    dns.message.from_wire(reply)
    assert_healthy(guard, url)


def test_random_udp_fuzz_each_readable_query_answered_once(guard):
    guard, url = guard
    rng = random.Random(s := seed())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    expected = got = 0
    kinds = {"unreadable": 0, "response": 0, "notimp": 0}
    for batch in range(80):  # 4,000 inputs
        want = 0
        for _ in range(50):
            data = fuzz_message(rng)
            sock.sendto(data, (guard.host, guard.port))
            kind = expected_kind(data)
            want += kind in REPLIED
            if kind in kinds:
                kinds[kind] += 1
        expected += want
        for _ in range(want):  # forwarded ones may take up to servfail_after
            try:
                reply = sock.recv(65535)
            except TimeoutError:
                break
            got += 1
            assert len(reply) >= 12 and reply[2] & 0x80, f"seed={s}"
            if not reply[2] & 0x78:  # every QUERY reply is well-formed DNS
                dns.message.from_wire(reply)
        if batch % 10 == 0:
            r = guard.query("ok.example", "A")
            assert r.answer and r.answer[0][0].to_text() == "192.0.2.1", f"seed={s} {r}"
    sock.settimeout(1.0)
    try:
        extra = sock.recv(65535)
        pytest.fail(f"seed={s}: more replies than readable queries: {extra[:20]!r}")
    except TimeoutError:
        pass
    sock.close()
    assert got == expected, f"seed={s}"
    m = scrape(url)
    for kind, count in kinds.items():  # counted by kind (the pipeline may add formerrs the scan cannot see)
        assert m[f'resolverguard_malformed_total{{kind="{kind}"}}'] == count, f"seed={s} kind={kind}"
    assert_healthy(guard, url)


def frame(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def read_frame(s: socket.socket) -> bytes | None:
    """One framed reply; None when the guard closed the connection."""
    head = recv_exact(s, 2)
    if head is None:
        return None
    return recv_exact(s, struct.unpack("!H", head)[0])


def connect(guard) -> socket.socket:
    s = socket.create_connection((guard.host, guard.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def closed_by_guard(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def test_crafted_tcp_frames(guard):
    guard, url = guard
    m0 = scrape(url)
    with connect(guard) as s:  # zero-length frame: nothing to answer, the connection is closed
        s.sendall(b"\x00\x00")
        assert closed_by_guard(s)
    with connect(guard) as s:  # a frame too short for a header
        s.sendall(frame(b"\x00" * 11))
        assert closed_by_guard(s)
    with connect(guard) as s:  # the prefix promises more than ever comes, then EOF: no reply, closed
        s.sendall(b"\x01\x00" + q()[:20])
        s.shutdown(socket.SHUT_WR)
        assert read_frame(s) is None
    with connect(guard) as s:  # the prefix promises less: the header alone is answered FORMERR
        data = q()
        s.sendall(struct.pack("!H", 12) + data[:12])
        reply = read_frame(s)
        assert reply[:2] == data[:2] and reply[3] & 0xF == dns.rcode.FORMERR
    with connect(guard) as s:  # a 64 KiB frame: a query with a 65 KB additional record is still a query
        data = with_counts(q("ok.example"), ar=1)
        data += b"\x00\x00\x10\x00\x01\x00\x00\x00\x00" + struct.pack("!H", 65535 - len(data) - 11)
        data += b"x" * (65535 - len(data))
        assert len(data) == 65535
        s.sendall(frame(data))
        reply = read_frame(s)
        assert reply is not None and reply[:2] == data[:2] and reply[2] & 0x80
        s.sendall(frame(random.randbytes(65535)))  # then 64 KiB of noise: FORMERR, NOTIMP or dropped ...
        s.sendall(frame(q("ok.example")))  # ... and the connection still serves the next query
        for _ in range(2):
            reply = read_frame(s)
            if dns.message.from_wire(reply).question and reply[3] & 0xF == 0:
                break
        assert dns.message.from_wire(reply).answer[0][0].to_text() == "192.0.2.1"
    with connect(guard) as s:  # one query a byte at a time
        for b in frame(q("ok.example")):
            s.sendall(bytes([b]))
        assert dns.message.from_wire(read_frame(s)).answer[0][0].to_text() == "192.0.2.1"
    m = scrape(url)
    frames = 'resolverguard_malformed_total{kind="tcp_frame"}'
    assert m[frames] - m0[frames] == 2  # the zero-length and the 11-octet frame
    assert_healthy(guard, url)


def test_random_tcp_fuzz(guard):
    """Pipelined hostile frames on a few connections, then one random frame per connection."""
    guard, url = guard
    rng = random.Random(s_ := seed())
    for _ in range(10):  # 10 connections x 60 pipelined frames, all at least a header long
        frames = [m for m in (fuzz_message(rng) for _ in range(80)) if len(m) >= 12][:60]
        want = sum(1 for m in frames if not m[2] & 0x80)  # every query gets exactly one framed reply
        with connect(guard) as s:
            good = dns.message.make_query("ok.example", "A")
            good.id = 0xBEEF
            s.sendall(b"".join(frame(m) for m in frames) + frame(good.to_wire()))
            replies = [read_frame(s) for _ in range(want + 1)]
            assert None not in replies, f"seed={s_}"
            answered = [r for r in replies if r[:2] == b"\xbe\xef" and r[3] & 0xF == 0 and r[7] == 1]  # NOERROR, 1 RR
            assert answered, f"seed={s_}: the good query went unanswered"
    for _ in range(150):
        data = fuzz_message(rng)
        with connect(guard) as s:
            s.sendall(frame(data))
            if len(data) < 12:
                assert closed_by_guard(s), f"seed={s_}"
            elif not data[2] & 0x80:
                reply = read_frame(s)
                assert reply is not None and reply[:2] == data[:2], f"seed={s_}"
    assert_healthy(guard, url)
