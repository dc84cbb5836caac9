"""metrics: the slot layout compiled code counts into, the recording methods, and the exposition they give."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.utils import floatToGoString

from resolverguard.codes import Rcode
from resolverguard.metrics import LATENCY_BUCKETS, LATENCY_BUCKETS_NS, Metrics, bucket_index

NXDOMAIN = b"\x12\x34\x81\x83" + b"\0" * 8
NOTAUTH = b"\x12\x34\x81\x89" + b"\0" * 8  # rcode 9: "other"


def moved(m: Metrics) -> dict[str, float]:
    """Every resolverguard_* sample that is not 0 (build_info aside) as 'name{a="b"}' (le last), for exact asserts."""
    out = {}
    for family in m.registry.collect():
        for s in family.samples:
            if s.name.startswith("resolverguard_") and s.name != "resolverguard_build_info" and s.value != 0:
                labels = sorted(s.labels.items(), key=lambda kv: (kv[0] == "le", kv[0]))
                out[s.name + "{" + ",".join(f'{a}="{b}"' for a, b in labels) + "}"] = s.value
    return out


def test_bucket_index_is_the_first_bound_not_below_the_observation():
    assert bucket_index(0) == 0
    assert bucket_index(LATENCY_BUCKETS[0]) == 0  # le: a bound holds its own value
    assert bucket_index(0.00026) == 1
    assert bucket_index(8) == len(LATENCY_BUCKETS) - 1
    assert bucket_index(8.5) == len(LATENCY_BUCKETS)  # +Inf
    assert LATENCY_BUCKETS_NS[0] == 250_000 and len(LATENCY_BUCKETS_NS) == len(LATENCY_BUCKETS)


def cumulative(name: str, labels: str, first: int, count: int) -> dict[str, float]:
    """A histogram's moved samples: `count` observations, all in bucket `first` (an index of LATENCY_BUCKETS)."""
    bounds = [*map(floatToGoString, LATENCY_BUCKETS), "+Inf"]
    out = {f'{name}_bucket{{{labels},le="{b}"}}': count for b in bounds[first:]}
    return {**out, f"{name}_count{{{labels}}}": count}


def test_recording_methods_move_exactly_their_series():
    m = Metrics(CollectorRegistry())
    m.query("udp", 1)
    m.query("tcp", 4242)  # no name: other
    m.response("cached", NXDOMAIN, 0.0003)
    m.response("cached", NOTAUTH, 0.0004)
    m.response("dropped", None, 0.002)
    m.upstream("127.0.0.1:53", "NOERROR", 0.01)
    m.upstream("127.0.0.1:53", "timeout", 1.0)
    got = moved(m)
    sums = {n: got.pop(n) for n in list(got) if "_sum{" in n}
    assert sums == {
        'resolverguard_request_duration_seconds_sum{outcome="cached"}': pytest.approx(0.0007),
        'resolverguard_request_duration_seconds_sum{outcome="dropped"}': pytest.approx(0.002),
        'resolverguard_upstream_request_duration_seconds_sum{upstream="127.0.0.1:53"}': pytest.approx(0.01),
    }
    assert m.registry.get_sample_value("resolverguard_upstream_up", {"upstream": "127.0.0.1:53"}) == 0  # timed out
    assert got == {
        'resolverguard_queries_total{qtype="A",transport="udp"}': 1,
        'resolverguard_queries_total{qtype="other",transport="tcp"}': 1,
        'resolverguard_responses_total{outcome="cached",rcode="NXDOMAIN"}': 1,
        'resolverguard_responses_total{outcome="cached",rcode="other"}': 1,  # rcode 9
        'resolverguard_responses_total{outcome="dropped",rcode="none"}': 1,  # no reply
        'resolverguard_upstream_responses_total{rcode="NOERROR",upstream="127.0.0.1:53"}': 1,
        'resolverguard_upstream_errors_total{kind="timeout",upstream="127.0.0.1:53"}': 1,
        **cumulative("resolverguard_request_duration_seconds", 'outcome="cached"', 1, 2),
        **cumulative("resolverguard_request_duration_seconds", 'outcome="dropped"', 3, 1),
        **cumulative("resolverguard_upstream_request_duration_seconds", 'upstream="127.0.0.1:53"', 5, 1),
    }


def test_slots_are_the_series_compiled_code_counts_into():
    m = Metrics(CollectorRegistry())
    counts = memoryview(m.counts)  # as a C extension sees it
    counts[m.query_slot("udp", 28)] += 2
    counts[m.response_slot("blocked_typo", Rcode.NXDOMAIN)] += 1
    first, total = m.duration_slots("blocked_typo")
    counts[first + bucket_index(0.003)] += 1
    counts[total] += 3_000_000
    child = m.typo_blocks.labels("army.mil", "tld_typo", "nxdomain", "MX")
    counts[child.slot] += 1
    child.inc()
    assert m.response_slot("cached", "NOERROR") == m.response_slot("cached", Rcode.NOERROR)  # one series
    assert moved(m) == {
        'resolverguard_queries_total{qtype="AAAA",transport="udp"}': 2,
        'resolverguard_responses_total{outcome="blocked_typo",rcode="NXDOMAIN"}': 1,
        'resolverguard_typo_blocks_total{action="nxdomain",protected_domain="army.mil",qtype="MX",typo_class="tld_typo"}': 2,
        **cumulative("resolverguard_request_duration_seconds", 'outcome="blocked_typo"', 4, 1),
        'resolverguard_request_duration_seconds_sum{outcome="blocked_typo"}': 0.003,
    }
