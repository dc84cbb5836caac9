"""Abuse and spoofing: not an open resolver, per-client rate limits, RFC 8482 ANY, UDP size, forged upstream replies.

Clients come from different loopback addresses (127.0.0.2, .3, ... are all ours on Linux), so per-client
behaviour is tested with real source addresses.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostile import (  # noqa: E402
    SpoofingUpstream,
    config,
    query_from,
    scrape,
    start_with_metrics,
    udp_exchange,
    wait_metric,
)

from resolverguard.config import Config  # noqa: E402
from resolverguard.pipeline import Access  # noqa: E402


def test_not_an_open_resolver_by_default():
    access = Access(Config().allow_clients)
    for outsider in ("8.8.8.8", "203.0.113.9", "2001:db8::1", "::ffff:198.51.100.1", "100.64.0.1"):
        assert not access.allowed(outsider), outsider
    for insider in ("127.0.0.1", "::1", "10.1.2.3", "192.168.1.1", "::ffff:10.0.0.1"):
        assert access.allowed(insider), insider


def test_clients_outside_allow_clients_get_refused_and_cost_nothing(tmp_path, upstream, start_guard):
    upstream.on("acl.example", "A", "acl.example. 300 A 192.0.2.4")
    cfg = config(tmp_path, 'allow_clients = ["127.0.0.2/32"]\n')  # loopback itself is not allowed
    guard, url = start_with_metrics(start_guard, "--config", cfg, "--upstream", upstream.address)
    where = (guard.host, guard.port)
    for tcp in (False, True):
        assert guard.query("acl.example", "A", tcp=tcp).rcode() == dns.rcode.REFUSED
    assert query_from("127.0.0.3", where, "acl.example").rcode() == dns.rcode.REFUSED
    assert upstream.count("acl.example") == 0
    assert query_from("127.0.0.2", where, "acl.example").answer[0][0].to_text() == "192.0.2.4"
    assert wait_metric(url, 'resolverguard_responses_total{outcome="refused",rcode="REFUSED"}', lambda v: v >= 3) == 3


def _limited_guard(tmp_path, upstream, start_guard, action: str):
    upstream.on("rl.example", "A", "rl.example. 300 A 192.0.2.5")
    cfg = config(tmp_path, f'[ratelimit]\nqps = 0.01\nburst = 3\nexempt = ["127.0.0.4/32"]\naction = "{action}"\n')
    return start_with_metrics(start_guard, "--config", cfg, "--upstream", upstream.address)


def test_rate_limit_per_client_refused_with_exempt_list(tmp_path, upstream, start_guard):
    guard, url = _limited_guard(tmp_path, upstream, start_guard, "refused")
    where = (guard.host, guard.port)
    flood = [query_from("127.0.0.2", where, "rl.example").rcode() for _ in range(8)]
    assert flood == [dns.rcode.NOERROR] * 3 + [dns.rcode.REFUSED] * 5  # the burst, then the bucket is empty
    assert query_from("127.0.0.3", where, "rl.example").rcode() == dns.rcode.NOERROR  # another client: own bucket
    exempt = [query_from("127.0.0.4", where, "rl.example").rcode() for _ in range(20)]
    assert exempt == [dns.rcode.NOERROR] * 20  # the MTA on the exempt list is never limited
    limited = 'resolverguard_responses_total{outcome="ratelimited",rcode="REFUSED"}'
    assert wait_metric(url, limited, lambda v: v >= 5) == 5


def test_rate_limit_drop_sends_nothing(tmp_path, upstream, start_guard):
    guard, url = _limited_guard(tmp_path, upstream, start_guard, "drop")
    where = (guard.host, guard.port)
    got = [query_from("127.0.0.2", where, "rl.example", timeout=3.0 if i < 3 else 0.5) for i in range(6)]
    assert [r is not None for r in got] == [True] * 3 + [False] * 3
    assert wait_metric(url, 'resolverguard_responses_total{outcome="ratelimited",rcode="none"}', lambda v: v >= 3) == 3
    assert guard.query("rl.example", "A").rcode() == dns.rcode.NOERROR  # 127.0.0.1 is unaffected


def test_any_is_answered_minimally_without_asking_upstream(upstream, start_guard):
    upstream.on("any.example", "A", "any.example. 300 A 192.0.2.6")
    guard = start_guard("--upstream", upstream.address)
    for tcp in (False, True):
        reply = guard.query("any.example", "ANY", tcp=tcp)
        assert reply.rcode() == dns.rcode.NOERROR
        assert [(rr.rdtype, rr[0].to_text()) for rr in reply.answer] == [(dns.rdatatype.HINFO, '"RFC8482" ""')]
    assert upstream.count("any.example") == 0


def test_no_udp_reply_exceeds_the_client_size(upstream, start_guard):
    upstream.on("big.example", "TXT", mode="big")
    upstream.on("big.example", "A", *[f"big.example. 300 A 192.0.2.{i}" for i in range(1, 120)])
    guard = start_guard("--upstream", upstream.address, "--protect", "army.mil")
    cases = [("big.example", "TXT"), ("big.example", "A"), ("army.ml", "MX"), ("big.example", "ANY")]
    for name, qtype in cases:
        for edns, payload in ((None, 0), (0, 100), (0, 512), (0, 700), (0, 1232), (0, 4096)):
            q = dns.message.make_query(name, qtype, use_edns=edns, payload=payload)
            raw = udp_exchange(q.to_wire(), (guard.host, guard.port))
            limit = max(512, payload)  # below 512 counts as 512 (RFC 6891)
            assert raw is not None and len(raw) <= limit, (name, qtype, payload, len(raw or b""))
            reply = dns.message.from_wire(raw)
            if reply.flags & dns.flags.TC:  # cut: the client retries over TCP and gets all of it
                full = guard.query(name, qtype, tcp=True, use_edns=edns, payload=payload)
                assert not full.flags & dns.flags.TC and full.answer


def test_forged_upstream_replies_are_ignored_and_counted(tmp_path, start_guard):
    spoofer = SpoofingUpstream("192.0.2.44", spoof=True)
    try:
        guard, url = start_with_metrics(start_guard, "--upstream", spoofer.address)
        for i in range(5):
            reply = guard.query(f"target{i}.example", "A")
            assert [rr.to_text() for rr in reply.answer[0]] == ["192.0.2.44"]  # never 203.0.113.66
        up = spoofer.address
        m_mismatch = f'resolverguard_upstream_errors_total{{kind="mismatch",upstream="{up}"}}'
        assert wait_metric(url, m_mismatch, lambda v: v >= 10) == 10  # wrong ID and wrong question, 5 each
        assert scrape(url)[f'resolverguard_upstream_errors_total{{kind="wrong_source",upstream="{up}"}}'] == 5
        assert "203.0.113.66" not in guard.query("target0.example", "A").to_text()  # nor cached
    finally:
        spoofer.close()


def test_each_upstream_query_has_a_random_id_and_source_port(start_guard):
    recorder = SpoofingUpstream()
    try:
        guard = start_guard("--upstream", recorder.address)
        n = 300
        for i in range(n):
            q = dns.message.make_query(f"r{i}.example", "A")
            q.id = 7  # the client's ID is never reused upstream
            udp_exchange(q.to_wire(), (guard.host, guard.port))
        ports = [p for p, _, _ in recorder.seen]
        ids = [i for _, i, _ in recorder.seen]
        assert len(ids) == n
        # 300 draws from 65536: a repeat or two is chance; a counter or a fixed value is not
        assert len(set(ids)) >= n - 5 and ids.count(7) <= 2
        assert len(set(ports)) >= n - 5  # a fresh socket per query, on an OS-chosen random port
        for values, span in ((ids, 65536), (ports, 65536)):
            steps = [b - a for a, b in zip(values, values[1:], strict=False)]
            assert sum(1 for s in steps if abs(s) <= 2) <= 10  # not sequential
            assert max(values) - min(values) > span // 4  # spread over the space ...
        assert 16384 < statistics.mean(ids) < 49152  # ... around its middle
        assert sum(1 for i in ids if i >= 32768) in range(110, 191)  # both halves used (p < 1e-3 to fail by chance)
    finally:
        recorder.close()


def test_0x20_case_randomisation(tmp_path, start_guard):
    recorder = SpoofingUpstream()
    try:
        cfg = config(tmp_path, "randomize_case = true\n")
        guard = start_guard("--config", cfg, "--upstream", recorder.address)
        for i in range(10):
            reply = guard.query(f"MixedCase{i}.Example.Org", "A")
            assert reply.question[0].name.to_text() == f"MixedCase{i}.Example.Org."  # the client's own spelling
            assert reply.answer[0][0].to_text() == "192.0.2.44"
        sent = [name for _, _, name in recorder.seen]
        assert len({n.lower() for n in sent}) == 10
        assert len(set(sent)) == 10 and sum(n != n.lower() and n != n.upper() for n in sent) >= 8  # mixed case
    finally:
        recorder.close()


def test_0x20_leaves_the_query_type_alone(tmp_path, upstream, start_guard):
    """QTYPE 65 (HTTPS) is the octets 0x00 0x41: an "A" that case randomisation must not flip to 0x61."""
    cfg = config(tmp_path, "randomize_case = true\n")
    guard = start_guard("--config", cfg, "--upstream", upstream.address)
    for i in range(12):
        upstream.on(f"svc{i}.example", "HTTPS", f"svc{i}.example. 300 HTTPS 1 . alpn=h2")
        reply = guard.query(f"svc{i}.example", "HTTPS")
        assert reply.rcode() == dns.rcode.NOERROR and reply.answer, i
    assert {qtype for _, _, qtype, _ in upstream.seen} == {"HTTPS"}
