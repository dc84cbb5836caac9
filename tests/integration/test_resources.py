"""Resource bounds: idle TCP connections (slowloris), in-flight upstream queries, cache size under cache-busting."""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

import dns.message
import dns.rcode
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostile import config, raise_nofile, rss_kib, scrape, start_with_metrics, udp_exchange, wait_metric  # noqa: E402


def still_open(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def test_a_thousand_idle_tcp_connections_do_not_stop_service(tmp_path, upstream, start_guard):
    raise_nofile(4096)
    upstream.on("ok.example", "A", "ok.example. 300 A 192.0.2.1")
    cfg = config(tmp_path, "[tcp]\nmax_connections = 1000\nidle_timeout = 60\n")
    guard, url = start_with_metrics(start_guard, "--config", cfg, "--upstream", upstream.address)
    loris: list[socket.socket] = []
    try:
        for _ in range(1000):  # each sends one octet of a length prefix and then nothing
            s = socket.create_connection((guard.host, guard.port), timeout=10)
            s.sendall(b"\x00")
            loris.append(s)
        for _ in range(20):  # UDP clients are served ...
            assert guard.query("ok.example", "A").answer[0][0].to_text() == "192.0.2.1"
            # ... and so are new TCP clients: each takes the place of the longest-idle connection
            assert guard.query("ok.example", "A", tcp=True).answer[0][0].to_text() == "192.0.2.1"
        closed = [s for s in loris if not still_open(s)]
        assert 1 <= len(closed) <= 20 + 1
        assert set(closed) <= set(loris[:21])  # the oldest ones went first
        more = [socket.create_connection((guard.host, guard.port), timeout=10) for _ in range(200)]  # over the cap
        loris += more
        assert guard.query("ok.example", "A", tcp=True).answer[0][0].to_text() == "192.0.2.1"
        assert scrape(url)["resolverguard_internal_errors_total"] == 0
    finally:
        for s in loris:
            s.close()
    assert guard.proc.poll() is None and "Traceback" not in guard.output()


def test_partial_frame_connections_are_closed_when_idle(tmp_path, upstream, start_guard):
    cfg = config(tmp_path, "[tcp]\nidle_timeout = 0.5\n")
    guard = start_guard("--config", cfg, "--upstream", upstream.address)
    with socket.create_connection((guard.host, guard.port), timeout=10) as s:
        s.sendall(b"\x00\x30" + b"\x00" * 10)  # a frame that never completes
        assert s.recv(10) == b""  # closed by the guard (the socket timeout only stops a hang)


def test_in_flight_upstream_queries_are_capped(tmp_path, upstream, start_guard):
    for i in range(20):
        upstream.on(f"slow{i}.example", "A", f"slow{i}.example. 300 A 192.0.2.{i + 1}", delay=1.0)
    cfg = config(tmp_path, "max_inflight = 5\ntimeout = 3.0\nservfail_after = 4.0\n")
    guard, url = start_with_metrics(start_guard, "--config", cfg, "--upstream", upstream.address)
    results: dict[int, int] = {}

    def ask(i: int) -> None:
        raw = udp_exchange(dns.message.make_query(f"slow{i}.example", "A").to_wire(), (guard.host, guard.port), 8)
        results[i] = dns.message.from_wire(raw).rcode() if raw else -1

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    rcodes = sorted(results.values())
    assert rcodes.count(dns.rcode.NOERROR) == 5 and rcodes.count(dns.rcode.SERVFAIL) == 15, rcodes
    # the rest never left the guard (the five may be retransmitted: the upstream is slower than our RTO)
    assert sum(upstream.count(f"slow{i}.example") > 0 for i in range(20)) == 5
    upstream.on("after.example", "A", "after.example. 300 A 192.0.2.99")
    assert guard.query("after.example", "A").answer[0][0].to_text() == "192.0.2.99"  # slots are given back


@pytest.mark.parametrize("limit", ["entries = 50", "bytes = 8000"])
def test_cache_stays_bounded_under_unique_names(tmp_path, upstream, start_guard, limit):
    cfg = config(tmp_path, f"[cache]\n{limit}\n")
    guard, url = start_with_metrics(start_guard, "--config", cfg, "--upstream", upstream.address)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    peak = 0.0

    def bust(start: int, count: int) -> None:
        nonlocal peak
        for i in range(start, start + count):  # NXDOMAIN with an SOA: cacheable for 60 s (RFC 2308)
            sock.sendto(dns.message.make_query(f"u{i}.bust.example", "A").to_wire(), (guard.host, guard.port))
            assert dns.message.from_wire(sock.recv(4096)).rcode() == dns.rcode.NXDOMAIN
            if i % 100 == 0:
                peak = max(peak, scrape(url)["resolverguard_cache_entries"])

    bust(0, 500)
    rss_warm = rss_kib(guard.proc.pid)
    bust(500, 1500)
    growth_kib = rss_kib(guard.proc.pid) - rss_warm
    sock.close()
    final = wait_metric(url, "resolverguard_cache_entries", lambda v: v > 0)
    cap = 50 if limit.startswith("entries") else 8000 // 60  # an NXDOMAIN reply plus its key is over 60 octets
    assert 0 < final <= cap and peak <= cap
    assert growth_kib < 32 * 1024, f"RSS grew {growth_kib} KiB over 1,500 unique names"  # generous: flat, not tight
