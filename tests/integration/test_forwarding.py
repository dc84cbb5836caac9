"""The forwarding resolver end to end: real sockets on loopback, a stub upstream, the guard as a process."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from fakes import FakeUpstream
from polling import wait_until


def _config(tmp_path, text: str) -> str:
    path = tmp_path / "guard.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_forwards_mx_and_second_query_is_cached_with_smaller_ttl(upstream, start_guard, tcp):
    upstream.on("example.mil", "MX", "example.mil. 300 MX 10 mx.example.mil.")
    guard = start_guard("--upstream", upstream.address)
    first = guard.query("example.mil", "MX", tcp=tcp)
    assert first.rcode() == dns.rcode.NOERROR
    assert [r.to_text() for r in first.answer[0]] == ["10 mx.example.mil."]
    assert first.answer[0].ttl == 300

    def aged():  # the cached copy, once its TTL has counted down by at least a second
        reply = guard.query("example.mil", "MX", tcp=tcp)
        assert [r.to_text() for r in reply.answer[0]] == ["10 mx.example.mil."]
        return reply if reply.answer[0].ttl < 300 else None

    wait_until(aged, "the cached TTL to decrease", interval=0.1)
    assert upstream.count("example.mil") == 1


def test_ipv6_listener_and_ipv6_upstream(start_guard):
    up6 = FakeUpstream("::1")
    try:
        up6.on("v6.example", "AAAA", "v6.example. 60 AAAA 2001:db8::1")
        guard = start_guard("--listen", "[::1]:0", "--upstream", up6.address)
        assert guard.host == "::1"
        for tcp in (False, True):
            reply = guard.query("v6.example", "AAAA", tcp=tcp)
            assert reply.answer[0][0].to_text() == "2001:db8::1"
    finally:
        up6.close()


def test_negative_answer_cached_by_soa_minimum(upstream, start_guard):
    guard = start_guard("--upstream", upstream.address)
    for _ in range(3):
        assert guard.query("nothing.example", "A").rcode() == dns.rcode.NXDOMAIN
    assert upstream.count("nothing.example") == 1
    assert guard.query("nothing.example", "A").authority[0].ttl <= 60


def test_cache_key_ignores_case_and_echoes_client_spelling(upstream, start_guard):
    upstream.on("case.example", "A", "case.example. 300 A 192.0.2.7")
    guard = start_guard("--upstream", upstream.address)
    guard.query("case.example", "A")
    reply = guard.query("CaSe.ExAmPlE", "A")
    assert reply.question[0].name.to_text() == "CaSe.ExAmPlE."
    assert reply.answer[0][0].to_text() == "192.0.2.7"
    assert upstream.count("case.example") == 1


def test_do_bit_is_part_of_cache_key(upstream, start_guard):
    upstream.on("do.example", "A", "do.example. 300 A 192.0.2.8")
    guard = start_guard("--upstream", upstream.address)
    guard.query("do.example", "A", use_edns=0)
    guard.query("do.example", "A", use_edns=0, want_dnssec=True)
    guard.query("do.example", "A", use_edns=0, want_dnssec=True)
    assert upstream.count("do.example") == 2


def test_dead_upstream_gives_servfail_within_bound(tmp_path, upstream, start_guard):
    upstream.on("dead.example", "A", mode="drop")
    cfg = _config(tmp_path, "timeout = 0.4\nservfail_after = 1.0\n")
    guard = start_guard("--config", cfg, "--upstream", upstream.address)
    started = time.monotonic()
    reply = guard.query("dead.example", "A", timeout=5)
    elapsed = time.monotonic() - started
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert elapsed < 1.0 + 0.5  # the configured bound plus scheduling slack


def test_default_servfail_bound_is_at_most_three_seconds(upstream, start_guard):
    upstream.on("dead.example", "A", mode="drop")
    guard = start_guard("--upstream", upstream.address)
    started = time.monotonic()
    assert guard.query("dead.example", "A", timeout=6).rcode() == dns.rcode.SERVFAIL
    assert time.monotonic() - started <= 3.0


def test_failover_to_second_upstream_and_dead_one_is_tried_less(tmp_path, upstream, start_guard):
    dead = FakeUpstream()
    try:
        dead.on("*", "A", mode="drop")
        for i in range(4):
            dead.on(f"n{i}.example", "A", mode="drop")
            upstream.on(f"n{i}.example", "A", f"n{i}.example. 300 A 192.0.2.{i + 1}")
        cfg = _config(tmp_path, "timeout = 0.3\nservfail_after = 2.0\n")
        guard = start_guard("--config", cfg, "--upstream", dead.address, "--upstream", upstream.address)
        for i in range(4):
            reply = guard.query(f"n{i}.example", "A")
            assert reply.answer[0][0].to_text() == f"192.0.2.{i + 1}"
        assert dead.count("n0.example") == 1
        assert sum(dead.count(f"n{i}.example") for i in range(1, 4)) == 0  # marked down: healthy one first
    finally:
        dead.close()


def test_truncated_udp_reply_is_retried_over_tcp(upstream, start_guard):
    upstream.on("tc.example", "A", "tc.example. 300 A 192.0.2.9", mode="truncate")
    guard = start_guard("--upstream", upstream.address)
    reply = guard.query("tc.example", "A")
    assert reply.answer[0][0].to_text() == "192.0.2.9"
    assert upstream.count("tc.example", "udp") == 1 and upstream.count("tc.example", "tcp") == 1


@pytest.mark.parametrize("mode", ["wrong_id", "wrong_question", "other_port", "garbage"])
def test_spoofed_or_garbage_upstream_replies_are_ignored(tmp_path, upstream, start_guard, mode):
    upstream.on("spoof.example", "A", "spoof.example. 300 A 192.0.2.10", mode=mode)
    cfg = _config(tmp_path, "timeout = 0.3\nservfail_after = 0.6\n")
    guard = start_guard("--config", cfg, "--upstream", upstream.address)
    reply = guard.query("spoof.example", "A")
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert not reply.answer


def test_fresh_random_id_per_upstream_query(upstream, start_guard):
    guard = start_guard("--upstream", upstream.address)
    for i in range(5):
        q = dns.message.make_query(f"idcheck{i}.example", "A")
        q.id = 4242
        dns.query.udp(q, guard.host, port=guard.port, timeout=3)
    ids = [i for _, n, _, i in upstream.seen if n.startswith("idcheck")]
    assert len(ids) == 5
    assert len(set(ids)) >= 4 and ids.count(4242) <= 1  # not the client's ID, and not a fixed one


def test_udp_reply_never_exceeds_client_size(upstream, start_guard):
    upstream.on("big.example", "TXT", mode="big")
    guard = start_guard("--upstream", upstream.address)
    q = dns.message.make_query("big.example", "TXT")  # no EDNS: 512 bytes
    raw = _udp_raw(q.to_wire(), guard)
    assert len(raw) <= 512
    assert dns.message.from_wire(raw).flags & dns.flags.TC
    q = dns.message.make_query("big.example", "TXT", use_edns=0, payload=1232)
    raw = _udp_raw(q.to_wire(), guard)
    assert len(raw) <= 1232 and dns.message.from_wire(raw).flags & dns.flags.TC
    full = dns.query.tcp(dns.message.make_query("big.example", "TXT"), guard.host, port=guard.port, timeout=3)
    assert len(full.answer[0]) == 40
    q = dns.message.make_query("big.example", "TXT", use_edns=0, payload=4096)
    big = dns.message.from_wire(_udp_raw(q.to_wire(), guard))
    assert not big.flags & dns.flags.TC and len(big.answer[0]) == 40


def _udp_raw(data: bytes, guard) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(data, (guard.host, guard.port))
        return s.recv(65535)


def test_tcp_pipelining_out_of_order(upstream, start_guard):
    upstream.on("slow.example", "A", "slow.example. 300 A 192.0.2.1", delay=0.5)
    upstream.on("fast.example", "A", "fast.example. 300 A 192.0.2.2")
    guard = start_guard("--upstream", upstream.address)
    with socket.create_connection((guard.host, guard.port), timeout=5) as s:
        queries = [dns.message.make_query(n, "A") for n in ("slow.example", "fast.example")]
        queries[0].id, queries[1].id = 1001, 1002
        s.sendall(b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in queries)))
        got = [_read_frame(s) for _ in range(2)]
    assert [m.id for m in got] == [1002, 1001]  # the fast answer overtakes the slow one
    assert got[1].answer[0][0].to_text() == "192.0.2.1"


def _frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def _read_frame(s: socket.socket) -> dns.message.Message:
    size = struct.unpack("!H", _exact(s, 2))[0]
    return dns.message.from_wire(_exact(s, size))


def _exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def test_tcp_idle_timeout_and_connection_cap(tmp_path, upstream, start_guard):
    upstream.on("x.example", "A", "x.example. 300 A 192.0.2.3")
    cfg = _config(tmp_path, "[tcp]\nidle_timeout = 0.5\nmax_connections = 3\n")
    guard = start_guard("--config", cfg, "--upstream", upstream.address)
    idle = socket.create_connection((guard.host, guard.port), timeout=30)
    assert idle.recv(10) == b""  # blocks until the guard closes it (the 30 s socket timeout is the deadline)
    idle.close()
    # at the cap, a new client still gets served: the longest-idle connection makes room
    held = [socket.create_connection((guard.host, guard.port), timeout=5) for _ in range(3)]
    for s in held:  # one answered query each: the guard has taken every connection in
        s.sendall(_frame(dns.message.make_query("x.example", "A").to_wire()))
        assert _read_frame(s).answer[0][0].to_text() == "192.0.2.3"
    assert guard.query("x.example", "A", tcp=True).answer[0][0].to_text() == "192.0.2.3"
    closed = 0
    for s in held:
        s.settimeout(2)
        try:
            closed += s.recv(10) == b""
        except OSError:
            closed += 1
        s.close()
    assert closed >= 1


def test_clients_outside_allowed_networks_are_refused(tmp_path, upstream, start_guard):
    upstream.on("acl.example", "A", "acl.example. 300 A 192.0.2.4")
    cfg = _config(tmp_path, 'allow_clients = ["10.0.0.0/8"]\n')
    guard = start_guard("--config", cfg, "--upstream", upstream.address)
    assert guard.query("acl.example", "A").rcode() == dns.rcode.REFUSED
    assert guard.query("acl.example", "A", tcp=True).rcode() == dns.rcode.REFUSED
    assert upstream.count("acl.example") == 0


def test_sigterm_finishes_in_flight_queries_and_exits_zero(upstream, start_guard):
    upstream.on("inflight.example", "A", "inflight.example. 300 A 192.0.2.5", delay=0.6)
    guard = start_guard("--upstream", upstream.address)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.sendto(dns.message.make_query("inflight.example", "A").to_wire(), (guard.host, guard.port))
    wait_until(lambda: upstream.count("inflight.example") == 1, "the query to reach the upstream")
    guard.proc.terminate()
    reply = dns.message.from_wire(sock.recv(4096))
    assert reply.answer[0][0].to_text() == "192.0.2.5"
    assert guard.proc.wait(10) == 0
    sock.close()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["serve", "--bogus"], "unrecognized arguments: --bogus"),
        (["serve", "--listen", "not-an-ip:53"], "bad address 'not-an-ip:53'"),
        (["serve", "--listen", "127.0.0.1:99999"], "bad port"),
        (["serve", "--config", "/nonexistent/guard.toml"], "/nonexistent/guard.toml: cannot read"),
    ],
)
def test_user_errors_are_one_line_exit_2(tmp_path, argv, expected):
    out = subprocess.run(
        [sys.executable, "-m", "resolverguard", *argv], capture_output=True, text=True, cwd=tmp_path, timeout=30
    )
    assert out.returncode == 2
    assert expected in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "text, expected",
    [
        ("timeout = 1.0\nlisten = [\n", "guard.toml:2"),
        ("timeout = 1.0\nfrobnicate = 3\n", "guard.toml:2: unknown key 'frobnicate'"),
        ('\n\ntimeout = "soon"\n', "guard.toml:3: timeout: expected a number"),
        ('[typo]\naction = "explode"\n', "guard.toml:2: [typo] action: 'explode' is not one of"),
    ],
)
def test_invalid_config_names_file_and_line(tmp_path, text, expected):
    cfg = _config(tmp_path, text)
    out = subprocess.run(
        [sys.executable, "-m", "resolverguard", "serve", "--config", cfg],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
    )
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_cname_loop_from_the_upstream_is_servfail(upstream, start_guard):
    """Issue 26.4: passed through as NOERROR before; Unbound answers SERVFAIL."""
    upstream.on("ring.example", "A", "ring.example. 300 CNAME ring2.example.", "ring2.example. 300 CNAME RING.example.")
    upstream.on("chain.example", "A", "chain.example. 300 CNAME end.example.", "end.example. 300 A 192.0.2.6")
    guard = start_guard("--upstream", upstream.address)
    looped = guard.query("ring.example", "A", use_edns=0)
    assert looped.rcode() == dns.rcode.SERVFAIL and not looped.answer
    assert [o.code for o in looped.options if o.otype == dns.edns.EDE] == [23]
    chain = guard.query("chain.example", "A")  # a chain that ends is an answer
    assert chain.rcode() == dns.rcode.NOERROR and chain.answer[-1][0].to_text() == "192.0.2.6"


def test_badvers_reply_keeps_the_cd_bit(upstream, start_guard):
    """Issue 26.4: CD is echoed in every reply (RFC 4035 3.2.2), BADVERS included."""
    guard = start_guard("--upstream", upstream.address)
    for cd in (True, False):
        q = dns.message.make_query("v.example", "A", use_edns=1)
        if cd:
            q.flags |= dns.flags.CD
        r = dns.message.from_wire(_udp_raw(q.to_wire(), guard))
        assert r.rcode() == dns.rcode.BADVERS and bool(r.flags & dns.flags.CD) == cd
    assert upstream.count("v.example") == 0
