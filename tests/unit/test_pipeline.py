"""pipeline: each synchronous stage alone, the forwarder with a fake pool, and the fixed stage order."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import dns.message
import dns.rcode
import dns.rrset
import pytest
from corefix import policy, query

from resolverguard import wire
from resolverguard.answers import Sink
from resolverguard.cache import Cache
from resolverguard.codes import Action, Outcome
from resolverguard.config import Config
from resolverguard.errors import UpstreamError
from resolverguard.metrics import Metrics
from resolverguard.pipeline import Access, Answer, CacheStage, Forwarder, PolicyStage, RateLimit, Sanity, build_pipeline


def rcode(answer: Answer) -> int:
    assert answer.reply is not None
    return dns.message.from_wire(answer.reply).rcode()


def value(metrics: Metrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def upstream_reply(q: wire.Query, address: str = "192.0.2.1") -> bytes:
    r = dns.message.make_response(dns.message.from_wire(q.data))
    r.answer.append(dns.rrset.from_text(q.qname + ".", 300, "IN", "A", address))
    return r.to_wire()


def test_answer_outcomes_are_outcome_members_and_all_are_declared_in_metrics():
    assert Answer(None, "forwarded").outcome is Outcome.FORWARDED
    with pytest.raises(ValueError):
        Answer(None, "no-such-outcome")  # raised while building the answer, before anything is sent
    metrics = Metrics()
    for outcome in Outcome:
        metrics.response(outcome, None, 0.001)
        assert value(metrics, "resolverguard_responses_total", outcome=outcome, rcode="none") == 1


def test_access_refuses_outsiders_and_unparseable_clients():
    stage = Access(["127.0.0.0/8", "2001:db8::/32"])
    assert stage.handle(query(client="127.0.0.9")) is None
    assert stage.handle(query(client="::ffff:127.0.0.1")) is None  # v4-mapped
    assert stage.handle(query(client="2001:db8::1%eth0")) is None  # zone index ignored
    for client in ("192.0.2.1", "garbage"):
        answer = stage.handle(query(client=client))
        assert answer is not None and answer.outcome is Outcome.REFUSED and rcode(answer) == dns.rcode.REFUSED


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("action", [Action.REFUSED, Action.DROP])
def test_ratelimit_token_bucket_exempt_networks_and_action(action):
    clock = Clock()
    stage = RateLimit(1.0, 2.0, ["10.0.0.0/8"], action, clock)
    assert stage.handle(query(client="192.0.2.1")) is None
    assert stage.handle(query(client="192.0.2.1")) is None
    limited = stage.handle(query(client="192.0.2.1"))
    assert limited is not None and limited.outcome is Outcome.RATELIMITED
    assert (limited.reply is None) == (action == Action.DROP)
    assert stage.handle(query(client="192.0.2.2")) is None  # per client
    assert all(stage.handle(query(client="10.1.2.3")) is None for _ in range(10))  # exempt
    clock.now += 1.0  # one token back
    assert stage.handle(query(client="192.0.2.1")) is None
    assert stage.handle(query(client="192.0.2.1")) is not None


def test_sanity_refuses_transfers_over_udp():
    stage = Sanity()
    assert stage.handle(query(qtype="ANY")) is None  # ANY is answered after the policy (test below)
    for qtype in ("AXFR", "IXFR"):
        refused = stage.handle(query(qtype=qtype))
        assert refused is not None and refused.outcome is Outcome.REFUSED
        assert stage.handle(query(qtype=qtype, tcp=True)) is None
    assert stage.handle(query()) is None


def policy_stage(rules: str = "", **kw) -> tuple[PolicyStage, Metrics, list]:
    metrics = Metrics()
    current = [policy(rules, **kw)]
    return PolicyStage(lambda: current[0], Sink(), metrics), metrics, current


def test_policy_stage_blocks_counts_and_remembers_per_question():
    stage, metrics, _ = policy_stage()
    labels = dict(protected_domain="army.mil", typo_class="tld_typo", action="nxdomain", qtype="A")
    first = stage.handle(query("army.ml"))
    assert first is not None and first.outcome is Outcome.BLOCKED_TYPO and rcode(first) == dns.rcode.NXDOMAIN
    again = query("ARMY.ML")
    second = stage.handle(again)  # remembered: same reply with the new query's ID and question case
    assert second is not None and second.reply is not None
    assert dns.message.from_wire(second.reply).id == again.id
    assert dns.message.from_wire(second.reply).question[0].name.to_text() == "ARMY.ML."
    assert value(metrics, "resolverguard_typo_blocks_total", **labels) == 2
    assert stage.handle(query("example.org")) is None


def test_policy_stage_log_only_and_passthru_forward_but_are_counted():
    stage, metrics, _ = policy_stage("gmial.com CNAME rpz-passthru.\n", typo_action=Action.LOG_ONLY)
    assert stage.handle(query("army.ml")) is None
    assert (
        value(
            metrics,
            "resolverguard_typo_would_block_total",
            protected_domain="army.mil",
            typo_class="tld_typo",
            qtype="A",
        )
        == 1
    )
    assert stage.handle(query("gmial.com")) is None
    assert value(metrics, "resolverguard_rpz_hits_total", zone="overrides", action="passthru") == 1


def test_policy_stage_tcp_only_truncates_udp_and_forwards_tcp():
    stage, _, _ = policy_stage("big.example CNAME rpz-tcp-only.\n")
    udp = stage.handle(query("big.example"))
    assert udp is not None and udp.outcome is Outcome.BLOCKED_OVERRIDE
    assert dns.message.from_wire(udp.reply).flags & 0x0200  # TC
    assert stage.handle(query("big.example", tcp=True)) is None


def test_policy_stage_forgets_decisions_when_the_policy_changes():
    stage, _, current = policy_stage()
    assert stage.handle(query("army.ml")) is not None
    current[0] = policy(protect=("navy.mil",))
    assert stage.handle(query("army.ml")) is None


def test_cache_stage_counts_requests():
    cache, metrics = Cache(), Metrics()
    stage = CacheStage(cache, metrics)
    q = query("cached.example")
    assert stage.handle(q) is None
    cache.put(q, upstream_reply(q))
    hit = stage.handle(query("cached.example"))
    assert hit is not None and hit.outcome is Outcome.CACHED
    assert value(metrics, "resolverguard_cache_requests_total") == 2  # hits: responses_total{outcome="cached"}


class Pool:
    """Stands in for UpstreamPool: answers from a function, or fails."""

    def __init__(self, answer=None) -> None:
        self.answer = answer

    async def resolve(self, q: wire.Query) -> bytes:
        if self.answer is None:
            raise UpstreamError("all upstreams failed")
        return self.answer(q)


def test_forwarder_fills_the_cache_and_fails_to_servfail_or_stale():
    clock, metrics = Clock(), Metrics()
    cache = Cache(stale_ttl=600, clock=clock)
    q = query("fwd.example")
    failed = asyncio.run(Forwarder(Pool(), cache, metrics).resolve(q))
    assert failed.outcome is Outcome.SERVFAIL and rcode(failed) == dns.rcode.SERVFAIL
    ok = asyncio.run(Forwarder(Pool(upstream_reply), cache, metrics).resolve(q))
    assert ok.outcome is Outcome.FORWARDED and len(cache) == 1
    assert value(metrics, "resolverguard_cache_entries") == 1
    clock.now += 400  # expired (TTL 300) but within the stale window
    assert cache.get(q) is None
    stale = asyncio.run(Forwarder(Pool(), cache, metrics).resolve(query("fwd.example")))
    assert stale.outcome is Outcome.STALE and dns.message.from_wire(stale.reply).answer[0].ttl == 30


def test_build_pipeline_fixes_the_stage_order():
    p = policy()
    cfg = Config()
    args = (lambda: p, Cache(), Pool(), Metrics())
    assert [s.name for s in build_pipeline(cfg, *args).stages] == ["access", "sanity", "sink_host", "policy", "cache"]
    limited = replace(cfg, ratelimit_qps=10.0)
    assert [s.name for s in build_pipeline(limited, *args).stages] == [
        "access",
        "ratelimit",
        "sanity",
        "sink_host",
        "policy",
        "cache",
    ]
    pipeline = build_pipeline(cfg, *args)
    assert pipeline.answer_now(query("army.ml")).outcome is Outcome.BLOCKED_TYPO
    assert pipeline.answer_now(query("example.org")) is None  # to the forwarder
    assert pipeline.answer_now(query(client="192.0.2.200")).outcome is Outcome.REFUSED  # access comes first


def test_any_runs_the_policy_first_blocked_and_overridden_names_do_not_appear_to_exist():
    pipeline = build_pipeline(Config(), lambda: policy("gone.example CNAME .\n"), Cache(), Pool(), Metrics())
    blocked = pipeline.answer_now(query("army.ml", qtype="ANY"))
    assert blocked.outcome is Outcome.BLOCKED_TYPO and rcode(blocked) == dns.rcode.NXDOMAIN
    gone = pipeline.answer_now(query("gone.example", qtype="ANY"))
    assert gone.outcome is Outcome.BLOCKED_OVERRIDE and rcode(gone) == dns.rcode.NXDOMAIN
    allowed = pipeline.answer_now(query("example.org", qtype="ANY"))
    assert allowed.outcome is Outcome.ANY_MINIMAL  # RFC 8482: one HINFO, never forwarded
    reply = dns.message.from_wire(allowed.reply)
    assert reply.rcode() == dns.rcode.NOERROR and "RFC8482" in reply.answer[0][0].to_text()


@pytest.mark.parametrize("rdclass", ["HS", "NONE", "ANY", "CLASS42"])
def test_classes_other_than_in_and_ch_are_refused_before_forwarding(rdclass):
    pipeline = build_pipeline(Config(), lambda: policy(), Cache(), Pool(), Metrics())
    refused = pipeline.answer_now(query("example.org", qtype="TXT", rdclass=rdclass))
    assert refused is not None and refused.outcome is Outcome.REFUSED and rcode(refused) == dns.rcode.REFUSED
    assert pipeline.answer_now(query("version.bind", qtype="TXT", rdclass="CH")) is None  # CH is forwarded
    assert pipeline.answer_now(query("example.org", qtype="TXT")) is None  # IN too


def test_rd0_is_answered_from_policy_and_cache_and_refused_otherwise():
    cache = Cache()
    pipeline = build_pipeline(Config(), lambda: policy(), cache, Pool(), Metrics())
    norec = dict(flags=0)  # RD=0: the client asks only for what the guard holds
    missing = pipeline.answer_now(query("example.org", **norec))
    assert missing.outcome is Outcome.REFUSED and rcode(missing) == dns.rcode.REFUSED  # never forwarded
    assert pipeline.answer_now(query("army.ml", **norec)).outcome is Outcome.BLOCKED_TYPO
    q = query("cached.example")
    cache.put(q, upstream_reply(q))
    assert pipeline.answer_now(query("cached.example", **norec)).outcome is Outcome.CACHED
    assert pipeline.answer_now(query("example.org")) is None  # RD=1: forwarded
