"""The UDP fast path, compiled (recvmmsg/sendmmsg) and pure Python, against a real guard process.

Every test runs twice: with the compiled loop and with RESOLVERGUARD_PURE=1. Answers the guard remembers
must count in the metrics like any other, count their TTLs down, follow a reload at once, and never reach a
client the access list or the rate limit would have stopped. Under CI=true the compiled loop must exist.
"""

from __future__ import annotations

import os
import signal
import urllib.request

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from fakes import free_port
from polling import wait_until
from prometheus_client.parser import text_string_to_metric_families

from resolverguard import fastpath


@pytest.fixture(params=["compiled", "python"])
def path_env(request) -> dict:
    if request.param == "compiled" and fastpath._fastudp is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the compiled UDP loop (resolverguard/_fastudp.c) was not built")
        pytest.skip("the compiled UDP loop was not built")
    return {"RESOLVERGUARD_PURE": "1" if request.param == "python" else ""}


def scrape(port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # noqa: S310 (loopback)
        text = resp.read().decode()
    want = set(labels.items())
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name and want <= set(s.labels.items())
    )


def _guard(start_guard, upstream, path_env, *args: str):
    mport = free_port()
    guard = start_guard("--upstream", upstream.address, "--metrics", f"127.0.0.1:{mport}", *args, env=path_env)
    return guard, mport


def test_remembered_answers_count_and_their_ttls_count_down(start_guard, upstream, path_env):
    upstream.on("mail.example", "A", "mail.example. 300 A 192.0.2.10")
    guard, mport = _guard(start_guard, upstream, path_env, "--events", "", "--protect", "army.mil")
    asks = 50
    ttls = [guard.query("mail.example", "A").answer[0].ttl for _ in range(asks)]
    assert upstream.count("mail.example") == 1  # one miss, the rest answered by the guard
    assert all(ttl <= 300 for ttl in ttls) and ttls == sorted(ttls, reverse=True)
    wait_until(
        lambda: scrape(mport, "resolverguard_queries_total", transport="udp", qtype="A") == asks,
        what="every query counted, the remembered ones too",
    )
    assert scrape(mport, "resolverguard_responses_total", outcome="cached", rcode="NOERROR") == asks - 1
    assert scrape(mport, "resolverguard_request_duration_seconds_count", outcome="cached") == asks - 1
    # the TTL goes on counting down while the answer is remembered and re-remembered
    wait_until(lambda: guard.query("mail.example", "A").answer[0].ttl <= ttls[-1] - 2, what="TTL counted down")
    assert upstream.count("mail.example") == 1


def test_remembered_blocks_count_per_protected_domain(start_guard, upstream, path_env):
    guard, mport = _guard(start_guard, upstream, path_env, "--events", "", "--protect", "army.mil")
    for _ in range(40):
        assert guard.query("army.ml", "MX").rcode() == dns.rcode.NXDOMAIN
    wait_until(
        lambda: scrape(mport, "resolverguard_typo_blocks_total", protected_domain="army.mil", qtype="MX") == 40,
        what="every block counted",
    )
    assert scrape(mport, "resolverguard_responses_total", outcome="blocked_typo") == 40
    assert upstream.count("army.ml") == 0


def test_blocks_with_an_event_log_are_each_logged(start_guard, upstream, path_env, tmp_path):
    guard, _ = _guard(start_guard, upstream, path_env, "--protect", "army.mil")  # events to events.jsonl
    for _ in range(20):
        assert guard.query("army.ml", "MX").rcode() == dns.rcode.NXDOMAIN
    events = tmp_path / "events.jsonl"
    wait_until(lambda: events.exists() and len(events.read_text().splitlines()) == 20, what="one event per block")


def test_a_reload_is_followed_at_once(start_guard, upstream, path_env, tmp_path):
    upstream.on("phish.example", "A", "phish.example. 300 A 192.0.2.66")
    guard, _ = _guard(start_guard, upstream, path_env, "--events", "", "--protect", "army.mil")
    for _ in range(5):  # miss, then remembered
        assert guard.query("phish.example", "A").rcode() == dns.rcode.NOERROR
    (tmp_path / "zones" / "local.rpz").write_text(
        "$TTL 60\n@ SOA localhost. root.localhost. 1 3600 600 86400 60\n@ NS localhost.\nphish.example CNAME .\n"
    )
    loads = guard.output().count("policy loaded")
    guard.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: guard.output().count("policy loaded") > loads, what="the reload")
    assert guard.query("phish.example", "A").rcode() == dns.rcode.NXDOMAIN  # the very next query


def test_clients_outside_the_access_list_or_over_the_limit_get_nothing_remembered(
    start_guard, upstream, path_env, tmp_path
):
    upstream.on("mail.example", "A", "mail.example. 300 A 192.0.2.10")
    cfg = tmp_path / "guard.toml"
    cfg.write_text(
        f'upstreams = ["{upstream.address}"]\nprotect = ["army.mil"]\nallow_clients = ["127.0.0.1/32", "127.0.0.3/32"]\n'
        '[ratelimit]\nqps = 1\nburst = 2\nexempt = ["127.0.0.1/32"]\n'
    )
    guard, _ = _guard(start_guard, upstream, path_env, "--config", str(cfg), "--events", "")
    for _ in range(10):  # remembered, for 127.0.0.1
        assert guard.query("mail.example", "A").rcode() == dns.rcode.NOERROR
        assert guard.query("army.ml", "A").rcode() == dns.rcode.NXDOMAIN
    q = dns.message.make_query("mail.example", "A")
    outsider = dns.query.udp(q, guard.host, port=guard.port, source="127.0.0.2", timeout=4)
    assert outsider.rcode() == dns.rcode.REFUSED
    limited = [dns.query.udp(q, guard.host, port=guard.port, source="127.0.0.3", timeout=4) for _ in range(10)]
    assert [r.rcode() for r in limited].count(dns.rcode.REFUSED) >= 5  # 2 of burst, then about 1 per second


def test_a_small_buffer_and_a_large_one_get_their_own_answers(start_guard, upstream, path_env):
    many = [f"big.example. 300 A 192.0.2.{i}" for i in range(1, 60)]  # about 1 KB: over 512, under 1232
    upstream.on("big.example", "A", *many)
    guard, _ = _guard(start_guard, upstream, path_env, "--events", "", "--protect", "army.mil")
    for _ in range(5):
        small = guard.query("big.example", "A")  # no EDNS: 512 octets
        large = guard.query("big.example", "A", use_edns=0, payload=1232)
        assert small.flags & dns.flags.TC and not small.answer
        assert not large.flags & dns.flags.TC and len(large.answer[0]) == 59
