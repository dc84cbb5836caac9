"""/metrics of a running guard: known series exist at 0 before any query, and each outcome moves its counters.

Every step asserts the exact set of samples that changed (histogram _bucket, _sum and _created aside),
so a query that moves a wrong counter fails as surely as one that moves none.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import struct
import time
import urllib.request
from pathlib import Path

import dns.message
import dns.rcode
import pytest
from fakes import free_port
from polling import wait_until
from prometheus_client.parser import text_string_to_metric_families

from resolverguard import __version__
from resolverguard.metrics import MALFORMED, OUTCOMES, QTYPES, RCODES, TRANSPORTS, UPSTREAM_ERRORS
from resolverguard.typo import TYPO_CLASSES
from resolverguard.typo.match import DEFAULT_POLICY

ROOT = Path(__file__).resolve().parents[2]
ZONE = "10-overrides"  # zones/10-overrides.rpz: the zone label is the file-name stem

Key = tuple[str, frozenset]


def key(name: str, **labels: str) -> Key:
    return name, frozenset(labels.items())


def show(k: Key) -> str:
    name, labels = k
    return name + ("{" + ",".join(f'{a}="{b}"' for a, b in sorted(labels)) + "}" if labels else "")


def scrape(url: str) -> dict[Key, float]:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (127.0.0.1 only)
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def moved(before: dict[Key, float], after: dict[Key, float]) -> dict[Key, float]:
    """Samples whose value changed, as deltas; histogram _bucket/_sum, _created and process_* series are left out."""
    skip = ("_bucket", "_sum", "_created")

    def value(v: float) -> float:  # NaN: not known yet (resolverguard_upstream_up before the first exchange)
        return 0.0 if math.isnan(v) else v

    return {
        k: value(after[k]) - value(before.get(k, 0.0))
        for k in after
        if not k[0].endswith(skip) and not k[0].startswith("process_") and value(after[k]) != value(before.get(k, 0.0))
    }


class Probe:
    """A guard's /metrics, remembered between steps: expect(...) asserts exactly what one step moved."""

    def __init__(self, metrics_url: str) -> None:
        self.url = metrics_url
        self.last = scrape(metrics_url)

    def expect(self, expected: dict[Key, float], timeout: float = 3.0) -> None:
        # Metrics are recorded just after the reply is sent: poll until the expected moves are there.
        deadline = time.monotonic() + timeout
        while True:
            now = scrape(self.url)
            delta = moved(self.last, now)
            if all(delta.get(k, 0.0) >= v if v > 0 else delta.get(k, 0.0) <= v for k, v in expected.items()):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.last = now
        got = {show(k): v for k, v in delta.items()}
        want = {show(k): float(v) for k, v in expected.items()}
        assert got == want


def counted(outcome: str, rcode: str, transport: str | None = "udp", qtype: str | None = "A") -> dict[Key, float]:
    """What every answered query moves: queries, responses and the latency histogram count."""
    moves = {
        key("resolverguard_responses_total", outcome=outcome, rcode=rcode): 1,
        key("resolverguard_request_duration_seconds_count", outcome=outcome): 1,
    }
    if transport is not None:
        moves[key("resolverguard_queries_total", transport=transport, qtype=qtype)] = 1
    return moves


def raw_udp(host: str, port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, (host, port))
        s.settimeout(0.5)
        try:
            s.recv(4096)
        except OSError:
            pass


def events(path: Path, count: int, timeout: float = 3.0) -> list[dict]:
    """The block event log: written by a thread, so wait for the expected number of lines."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)


@pytest.fixture
def zones(tmp_path) -> Path:
    z = tmp_path / "guard-zones"
    z.mkdir()
    shutil.copy(ROOT / "zones" / "10-overrides.rpz", z)
    return z


def start(start_guard, upstream, zones: Path, *extra: str):
    port = free_port()
    guard = start_guard(
        "--upstream",
        upstream.address,
        "--metrics",
        f"127.0.0.1:{port}",
        "--protect",
        "army.mil",
        "--protect",
        "gmail.com",
        *extra,
        zones=zones,
    )
    return guard, f"http://127.0.0.1:{port}/metrics"


def test_known_series_exist_at_zero_before_any_query(upstream, start_guard, zones):
    started = time.time()
    _, url = start(start_guard, upstream, zones)
    m = scrape(url)
    up = upstream.address

    zero = [
        key("resolverguard_responses_total", outcome="blocked_typo", rcode="NXDOMAIN"),
        key("resolverguard_cache_requests_total"),
        key("resolverguard_cache_entries"),
        key("resolverguard_tcp_rejected_total"),
        key("resolverguard_internal_errors_total"),
        key("resolverguard_policy_reloads_total", result="failure"),
        key("resolverguard_upstream_request_duration_seconds_count", upstream=up),
    ]
    zero += [key("resolverguard_responses_total", outcome=o, rcode=r) for o in OUTCOMES for r in RCODES]
    zero += [key("resolverguard_request_duration_seconds_count", outcome=o) for o in OUTCOMES]
    zero += [
        key("resolverguard_queries_total", transport=t, qtype=q)
        for t in TRANSPORTS
        for q in (*QTYPES.values(), "other")
    ]
    logged = [c for c, p in DEFAULT_POLICY.items() if p == "log-only"]  # count as would-block, the others as blocks
    zero += [
        key("resolverguard_typo_blocks_total", protected_domain=d, typo_class=c, action="nxdomain", qtype=q)
        for d in ("army.mil", "gmail.com")
        for c in TYPO_CLASSES
        if c not in logged
        for q in ("A", "AAAA", "MX")
    ]
    zero += [
        key("resolverguard_typo_would_block_total", protected_domain=d, typo_class=c, qtype=q)
        for d in ("army.mil", "gmail.com")
        for c in logged
        for q in ("A", "AAAA", "MX")
    ]
    zero += [key("resolverguard_malformed_total", kind=k) for k in MALFORMED]
    zero += [key("resolverguard_upstream_errors_total", upstream=up, kind=k) for k in UPSTREAM_ERRORS]
    zero += [
        key("resolverguard_upstream_responses_total", upstream=up, rcode=r) for r in ("NOERROR", "NXDOMAIN", "SERVFAIL")
    ]
    zero += [key("resolverguard_rpz_hits_total", zone=ZONE, action=a) for a in ("nxdomain", "passthru", "local-data")]
    missing = [show(k) for k in zero if k not in m]
    assert not missing, f"series not created at start: {missing[:10]} ({len(missing)})"
    assert {show(k): m[k] for k in zero if m[k] != 0} == {}

    assert m[key("resolverguard_policy_reloads_total", result="success")] == 1
    assert m[key("resolverguard_protected_domains")] == 2
    assert m[key("resolverguard_policy_rules", zone=ZONE)] > 0
    assert started - 1 <= m[key("resolverguard_policy_last_reload_timestamp_seconds")] <= time.time() + 1
    assert math.isnan(m[key("resolverguard_upstream_up", upstream=up)])  # unknown until the first exchange
    assert m[key("resolverguard_build_info", version=__version__)] == 1
    assert m[key("resolverguard_upstream_request_duration_seconds_bucket", upstream=up, le="0.00025")] == 0
    assert m[key("resolverguard_request_duration_seconds_bucket", outcome="cached", le="+Inf")] == 0


def test_each_outcome_moves_its_counters(upstream, start_guard, zones, tmp_path):
    upstream.on("army.mil", "A", "army.mil. 300 A 192.0.2.1")
    guard, url = start(start_guard, upstream, zones)
    probe, up = Probe(url), upstream.address

    assert guard.query("army.mil", "A").rcode() == dns.rcode.NOERROR
    probe.expect(
        {
            **counted("forwarded", "NOERROR"),
            key("resolverguard_cache_requests_total"): 1,
            key("resolverguard_cache_entries"): 1,
            key("resolverguard_upstream_up", upstream=up): 1,  # the first exchange: up (NaN before)
            key("resolverguard_upstream_responses_total", upstream=up, rcode="NOERROR"): 1,
            key("resolverguard_upstream_request_duration_seconds_count", upstream=up): 1,
        }
    )

    assert guard.query("army.mil", "A").rcode() == dns.rcode.NOERROR  # the cached repeat
    probe.expect(
        {
            **counted("cached", "NOERROR"),
            key("resolverguard_cache_requests_total"): 1,
        }
    )

    assert guard.query("nothing.example", "A").rcode() == dns.rcode.NXDOMAIN  # NXDOMAIN from the upstream
    probe.expect(
        {
            **counted("forwarded", "NXDOMAIN"),
            key("resolverguard_cache_requests_total"): 1,
            key("resolverguard_cache_entries"): 1,
            key("resolverguard_upstream_responses_total", upstream=up, rcode="NXDOMAIN"): 1,
            key("resolverguard_upstream_request_duration_seconds_count", upstream=up): 1,
        }
    )

    # Typo-neighbours: blocked before the cache and the upstream are consulted.
    assert guard.query("army.ml", "MX").rcode() == dns.rcode.NXDOMAIN
    probe.expect(
        {
            **counted("blocked_typo", "NXDOMAIN", qtype="MX"),
            key(
                "resolverguard_typo_blocks_total",
                protected_domain="army.mil",
                typo_class="tld_typo",
                action="nxdomain",
                qtype="MX",
            ): 1,
        }
    )
    assert guard.query("gmial.com", "A", tcp=True).rcode() == dns.rcode.NXDOMAIN
    probe.expect(
        {
            **counted("blocked_typo", "NXDOMAIN", transport="tcp"),
            key(
                "resolverguard_typo_blocks_total",
                protected_domain="gmail.com",
                typo_class="transposition",
                action="nxdomain",
                qtype="A",
            ): 1,
        }
    )
    assert upstream.count("army.ml") == upstream.count("gmial.com") == 0

    assert guard.query("phish.example", "A").rcode() == dns.rcode.NXDOMAIN  # an override (RPZ) rule
    probe.expect(
        {
            **counted("blocked_override", "NXDOMAIN"),
            key("resolverguard_rpz_hits_total", zone=ZONE, action="nxdomain"): 1,
        }
    )

    assert guard.query("army.mil", "ANY").rcode() == dns.rcode.NOERROR  # RFC 8482 minimal answer
    probe.expect(counted("any_minimal", "NOERROR", qtype="ANY"))

    # Malformed packets: counted by kind, never as queries.
    raw_udp(guard.host, guard.port, b"\x12\x34\x01")  # shorter than a DNS header: dropped
    probe.expect(
        {**counted("dropped", "none", transport=None), key("resolverguard_malformed_total", kind="unreadable"): 1}
    )
    reply = dns.message.make_response(dns.message.make_query("army.mil", "A")).to_wire()
    raw_udp(guard.host, guard.port, reply)  # a response, not a query: dropped
    probe.expect(
        {**counted("dropped", "none", transport=None), key("resolverguard_malformed_total", kind="response"): 1}
    )
    query = bytearray(dns.message.make_query("army.mil", "A", use_edns=False).to_wire())
    query[4:6] = struct.pack("!H", 2)  # QDCOUNT 2 with one question: FORMERR
    raw_udp(guard.host, guard.port, bytes(query))
    probe.expect(
        {**counted("formerr", "FORMERR", transport=None), key("resolverguard_malformed_total", kind="formerr"): 1}
    )

    # The block event log agrees with the counters' labels (qname and client only in the log).
    blocked = [e for e in events(tmp_path / "events.jsonl", 3) if e["outcome"] == "blocked_typo"]
    assert [(e["qname"], e["protected"], e["class"], e["qtype"], e["action"], e["transport"]) for e in blocked] == [
        ("army.ml", "army.mil", "tld_typo", "MX", "nxdomain", "udp"),
        ("gmial.com", "gmail.com", "transposition", "A", "nxdomain", "tcp"),
    ]


def test_log_only_and_upstream_failure(upstream, start_guard, zones, tmp_path):
    config = tmp_path / "guard.toml"
    config.write_text('timeout = 0.3\nservfail_after = 0.6\n[typo]\nclasses = { tld_typo = "log-only" }\n')
    upstream.on("army.ml", "MX", "army.ml. 300 MX 10 mx.army.ml.")
    upstream.on("down.example", "A", mode="drop")
    upstream.on("army.mil", "A", "army.mil. 300 A 192.0.2.1")
    guard, url = start(start_guard, upstream, zones, "--config", str(config))
    probe, up = Probe(url), upstream.address

    # log-only: the would-block counter moves and the lookup is forwarded (its outcome is the final one).
    assert guard.query("army.ml", "MX").rcode() == dns.rcode.NOERROR
    probe.expect(
        {
            **counted("forwarded", "NOERROR", qtype="MX"),
            key(
                "resolverguard_typo_would_block_total", protected_domain="army.mil", typo_class="tld_typo", qtype="MX"
            ): 1,
            key("resolverguard_cache_requests_total"): 1,
            key("resolverguard_cache_entries"): 1,
            key("resolverguard_upstream_up", upstream=up): 1,  # the first exchange: up (NaN before)
            key("resolverguard_upstream_responses_total", upstream=up, rcode="NOERROR"): 1,
            key("resolverguard_upstream_request_duration_seconds_count", upstream=up): 1,
        }
    )
    assert [e["action"] for e in events(tmp_path / "events.jsonl", 1)] == ["log-only"]

    # The only upstream times out: SERVFAIL, a timeout error, and the upstream is marked down ...
    assert guard.query("down.example", "A").rcode() == dns.rcode.SERVFAIL
    probe.expect(
        {
            **counted("servfail", "SERVFAIL"),
            key("resolverguard_cache_requests_total"): 1,
            key("resolverguard_upstream_errors_total", upstream=up, kind="timeout"): 1,
            key("resolverguard_upstream_up", upstream=up): -1,
        }
    )
    # ... until it answers again.
    assert guard.query("army.mil", "A").rcode() == dns.rcode.NOERROR
    probe.expect(
        {
            **counted("forwarded", "NOERROR"),
            key("resolverguard_cache_requests_total"): 1,
            key("resolverguard_cache_entries"): 1,
            key("resolverguard_upstream_up", upstream=up): 1,
            key("resolverguard_upstream_responses_total", upstream=up, rcode="NOERROR"): 1,
            key("resolverguard_upstream_request_duration_seconds_count", upstream=up): 1,
        }
    )


def test_rate_limited_queries(upstream, start_guard, zones, tmp_path):
    config = tmp_path / "guard.toml"
    config.write_text("[ratelimit]\nqps = 0.1\nburst = 1\n")
    upstream.on("army.mil", "A", "army.mil. 300 A 192.0.2.1")
    guard, url = start(start_guard, upstream, zones, "--config", str(config))
    assert guard.query("army.mil", "A").rcode() == dns.rcode.NOERROR
    # the first query's metrics are recorded just after its reply: wait for them, then take the baseline
    forwarded = key("resolverguard_request_duration_seconds_count", outcome="forwarded")
    wait_until(lambda: scrape(url).get(forwarded, 0) >= 1, "the first query's metrics")
    probe = Probe(url)
    assert guard.query("army.mil", "A").rcode() == dns.rcode.REFUSED
    probe.expect(counted("ratelimited", "REFUSED"))


def test_policy_reload_results(upstream, start_guard, zones):
    _, url = start(start_guard, upstream, zones)
    probe = Probe(url)
    loaded_at = probe.last[key("resolverguard_policy_last_reload_timestamp_seconds")]

    def wait_for(done) -> dict[Key, float]:
        deadline = time.monotonic() + 30
        while not done(m := scrape(url)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return m

    (zones / "20-broken.rpz").write_text("$TTL 300\nthis is not a record\n")
    m = wait_for(lambda m: m[key("resolverguard_policy_reloads_total", result="failure")] >= 1)
    changed = {show(k) for k in moved(probe.last, m)}  # a file event may trigger more than one reload
    assert changed == {'resolverguard_policy_reloads_total{result="failure"}'}
    assert m[key("resolverguard_protected_domains")] == 2  # the last good policy stays

    (zones / "20-broken.rpz").unlink()
    (zones / "extra.protect").write_text("navy.mil\n")
    m = wait_for(lambda m: m[key("resolverguard_protected_domains")] == 3)
    assert m[key("resolverguard_protected_domains")] == 3
    assert m[key("resolverguard_policy_reloads_total", result="success")] >= 2
    assert m[key("resolverguard_policy_last_reload_timestamp_seconds")] > loaded_at
    assert (
        m[
            key(
                "resolverguard_typo_blocks_total",
                protected_domain="navy.mil",
                typo_class="tld_typo",
                action="nxdomain",
                qtype="MX",
            )
        ]
        == 0
    )
