"""--workers N: several processes on one port (SO_REUSEPORT), one aggregated /metrics, one reload signal."""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request

import dns.message
import dns.query
import dns.rcode
from fakes import free_port
from prometheus_client.parser import text_string_to_metric_families


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # noqa: S310 (loopback)
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def total(samples: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_workers_share_port_aggregate_metrics_and_reload_together(upstream, start_guard):
    upstream.on("mail.example", "MX", "mail.example. 300 MX 10 mx.mail.example.")
    mport = free_port()
    guard = start_guard(
        "--upstream", upstream.address, "--workers", "2", "--metrics", f"127.0.0.1:{mport}", "--protect", "army.mil"
    )
    wait_for(lambda: guard.output().count("started version") == 2, "two workers start")
    pids = {int(p) for p in re.findall(r"worker started number=\d+ pid=(\d+)", guard.output())}
    assert len(pids) == 2 and guard.proc.pid not in pids
    assert {port for _host, port in guard.ports} == {guard.port}  # the same port in both workers

    sent = 0
    for i in range(200):  # each query from a fresh socket: the kernel spreads them over the workers
        reply = guard.query("army.ml" if i % 4 == 0 else "mail.example", "MX", tcp=i % 10 == 0)
        assert reply.rcode() == (dns.rcode.NXDOMAIN if i % 4 == 0 else dns.rcode.NOERROR)
        sent += 1
    wait_for(lambda: total(scrape(mport), "resolverguard_queries_total") == sent, "metrics add up over workers")
    samples = scrape(mport)
    assert total(samples, "resolverguard_typo_blocks_total", protected_domain="army.mil") == 50
    assert total(samples, "resolverguard_responses_total", outcome="blocked_typo") == 50
    assert total(samples, "resolverguard_build_info") == 1  # max over workers, not one series per process

    reloads = total(samples, "resolverguard_policy_reloads_total", result="success")
    guard.proc.send_signal(signal.SIGHUP)  # one signal to the supervisor reloads every worker
    wait_for(lambda: guard.output().count("policy loaded generation=1") == 2, "both workers reload")
    assert total(scrape(mport), "resolverguard_policy_reloads_total", result="success") == reloads + 2

    assert guard.stop() == 0
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_worker_that_dies_is_restarted(upstream, start_guard):
    guard = start_guard("--upstream", upstream.address, "--workers", "2")
    wait_for(lambda: guard.output().count("started version") == 2, "two workers start")
    victim = int(re.findall(r"worker started number=\d+ pid=(\d+)", guard.output())[0])
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: guard.output().count("started version") == 3, "a replacement worker starts", timeout=60)
    upstream.on("after.example", "A", "after.example. 300 A 192.0.2.1")
    for _ in range(20):
        assert (
            dns.query.udp(dns.message.make_query("after.example", "A"), guard.host, port=guard.port, timeout=3).rcode()
            == dns.rcode.NOERROR
        )
    assert guard.stop() == 0
