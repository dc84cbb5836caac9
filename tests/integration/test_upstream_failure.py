"""Upstream failure under load: an upstream process killed, stalled or blackholed; failover, SERVFAIL within the
bound when every upstream fails, recovery when they return, serve-stale through a short outage.

The upstreams are processes (tests/hostile.py UpstreamProcess): SIGKILL is a real crash (ICMP port unreachable,
TCP reset), SIGSTOP a real stall (queries queue, replies come late), SIGUSR1 a blackhole (read, never answered).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import dns.message
import dns.rcode
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostile import UpstreamProcess, config, scrape, start_with_metrics, wait_metric  # noqa: E402


class Load:
    """A client thread asking unique names (no cache hits) back to back; every reply and loss is kept."""

    def __init__(self, guard) -> None:
        self.guard, self.rcodes, self.lost, self.stop = guard, [], 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(8)  # only to avoid a hang: the guard answers within servfail_after
        i = 0
        while not self.stop.is_set():
            q = dns.message.make_query(f"load{i}.example", "A")
            sock.sendto(q.to_wire(), (self.guard.host, self.guard.port))
            try:
                while (reply := dns.message.from_wire(sock.recv(4096))).id != q.id:
                    pass
                self.rcodes.append(reply.rcode())
            except TimeoutError:
                self.lost += 1
            i += 1
        sock.close()

    def wait_for(self, more: int) -> None:
        target = len(self.rcodes) + more
        deadline = time.monotonic() + 30
        while len(self.rcodes) < target and time.monotonic() < deadline:
            time.sleep(0.02)

    def finish(self) -> tuple[list[int], int]:
        self.stop.set()
        self.thread.join(15)
        return self.rcodes, self.lost


@pytest.fixture
def upstreams():
    ups = [UpstreamProcess("192.0.2.1"), UpstreamProcess("192.0.2.1")]
    yield ups
    for u in ups:
        u.kill()


@pytest.mark.parametrize("failure", ["kill", "stall", "blackhole"])
def test_failover_under_load_and_recovery(tmp_path, start_guard, upstreams, failure):
    first, second = upstreams
    cfg = config(tmp_path, "timeout = 0.3\nservfail_after = 2.0\n")
    guard, url = start_with_metrics(
        start_guard, "--config", cfg, "--upstream", first.address, "--upstream", second.address
    )
    load = Load(guard)
    load.wait_for(50)
    if failure == "kill":
        first.kill()
    elif failure == "stall":
        first.stall()
    else:
        first.blackhole()
    load.wait_for(100)  # served by the second upstream meanwhile
    assert wait_metric(url, f'resolverguard_upstream_up{{upstream="{first.address}"}}', lambda v: v == 0) == 0
    if failure == "kill":
        first.restart()
    elif failure == "stall":
        first.stall(False)  # the queued queries are answered now, long after the guard gave up on them
    else:
        first.blackhole()
    load.wait_for(20)
    second.kill()  # now only the first one can answer: it must be tried again although it was marked down
    load.wait_for(100)
    rcodes, lost = load.finish()
    assert lost == 0
    assert rcodes.count(dns.rcode.NOERROR) == len(rcodes) >= 270  # not one SERVFAIL through all of it
    assert wait_metric(url, f'resolverguard_upstream_up{{upstream="{first.address}"}}', lambda v: v == 1) == 1
    m = scrape(url)
    assert m["resolverguard_internal_errors_total"] == 0
    assert (
        m[f'resolverguard_upstream_errors_total{{kind="timeout",upstream="{first.address}"}}']
        + m[f'resolverguard_upstream_errors_total{{kind="error",upstream="{first.address}"}}']
        + m[f'resolverguard_upstream_errors_total{{kind="refused",upstream="{first.address}"}}']  # ICMP unreachable
        >= 1
    )


def test_servfail_within_the_bound_when_all_fail_then_recovery(tmp_path, start_guard, upstreams):
    first, second = upstreams
    cfg = config(tmp_path, "timeout = 0.4\nservfail_after = 1.0\n")
    guard, url = start_with_metrics(
        start_guard, "--config", cfg, "--upstream", first.address, "--upstream", second.address
    )
    assert guard.query("before.example", "A").rcode() == dns.rcode.NOERROR
    first.blackhole()
    second.stall()
    for i in range(3):
        started = time.monotonic()
        reply = guard.query(f"dark{i}.example", "A", timeout=10)
        elapsed = time.monotonic() - started
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert elapsed < 1.0 + 1.0  # servfail_after, plus generous scheduling slack: never the client's timeout
    second.stall(False)
    first.blackhole()
    for i in range(3):
        assert guard.query(f"back{i}.example", "A").answer[0][0].to_text() == "192.0.2.1"
    assert wait_metric(url, 'resolverguard_responses_total{outcome="servfail",rcode="SERVFAIL"}', lambda v: v >= 3) == 3


@pytest.mark.parametrize("stale", [True, False], ids=["serve_stale", "no_stale"])
def test_serve_stale_through_a_short_outage(tmp_path, start_guard, stale):
    up = UpstreamProcess("192.0.2.7", ttl=1)
    try:
        stale_cfg = "[cache]\nserve_stale = 60\n" if stale else ""
        cfg = config(tmp_path, "timeout = 0.3\nservfail_after = 0.8\n" + stale_cfg)
        guard, url = start_with_metrics(start_guard, "--config", cfg, "--upstream", up.address)
        assert guard.query("stale.example", "A").answer[0][0].to_text() == "192.0.2.7"
        time.sleep(1.5)  # the answer's TTL (1 s) runs out
        up.kill()
        for _ in range(3):
            reply = guard.query("stale.example", "A")
            if stale:
                assert reply.rcode() == dns.rcode.NOERROR and reply.answer[0][0].to_text() == "192.0.2.7"
                assert reply.answer[0].ttl <= 30  # RFC 8767: stale answers go out with a short TTL
            else:
                assert reply.rcode() == dns.rcode.SERVFAIL
        if stale:
            assert (
                wait_metric(url, 'resolverguard_responses_total{outcome="stale",rcode="NOERROR"}', lambda v: v >= 3)
                == 3
            )
        up.restart()
        assert guard.query("stale.example", "A").answer[0][0].to_text() == "192.0.2.7"
        assert guard.query("fresh.example", "A").rcode() == dns.rcode.NOERROR
    finally:
        up.kill()
