"""The query pipeline: the Stage protocol and build_pipeline(), the only place that fixes stage order."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from . import answers, wire
from .cache import Cache
from .errors import UpstreamError
from .events import emit_block
from .metrics import Metrics, QTYPES
from .policy import FORWARD, Decision, Policy
from .upstream import UpstreamPool

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Answer:
    """A stage's reply: bytes to send (None: send nothing) and the outcome recorded in metrics."""

    reply: bytes | None
    outcome: str


class Stage(Protocol):
    """A synchronous step: answer the query now, or return None to hand it to the next stage."""

    name: str

    def handle(self, query: wire.Query) -> Answer | None: ...


class Access:
    """Refuse clients outside the allowed networks: never an open resolver."""

    name = "access"

    def __init__(self, networks: Sequence[str]) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self.known: dict[str, bool] = {}

    def allowed(self, client: str) -> bool:
        ok = self.known.get(client)
        if ok is None:
            if len(self.known) > 65_536:
                self.known.clear()
            try:
                addr = ipaddress.ip_address(client.split("%")[0])
                addr = getattr(addr, "ipv4_mapped", None) or addr
                ok = any(addr in net for net in self.networks)
            except ValueError:
                ok = False
            self.known[client] = ok
        return ok

    def handle(self, query: wire.Query) -> Answer | None:
        if self.allowed(query.client):
            return None
        return Answer(wire.reply_for(query, wire.REFUSED), "refused")


class RateLimit:
    """Per-client token bucket; clients in the exempt networks (the MTAs) are never limited."""

    name = "ratelimit"

    def __init__(self, qps: float, burst: float, exempt: Sequence[str], action: str, metrics: Metrics,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.qps, self.burst = qps, max(burst, qps)
        self.exempt = Access(exempt)
        self.drop = action == "drop"
        self.metrics, self.clock = metrics, clock
        self.buckets: dict[str, tuple[float, float]] = {}

    def handle(self, query: wire.Query) -> Answer | None:
        if self.exempt.allowed(query.client):
            return None
        now = self.clock()
        tokens, last = self.buckets.get(query.client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.qps)
        if len(self.buckets) > 100_000:
            self.buckets.clear()
        if tokens >= 1:
            self.buckets[query.client] = (tokens - 1, now)
            return None
        self.buckets[query.client] = (tokens, now)
        self.metrics.ratelimited.inc()
        return Answer(None if self.drop else wire.reply_for(query, wire.REFUSED), "ratelimited")


class Sanity:
    """Queries that are answered without policy or upstream: ANY (RFC 8482) and zone transfers over UDP."""

    name = "sanity"
    HINFO = b"\xc0\x0c\x00\x0d\x00\x01\x00\x00\x0e\x10\x00\x09\x07RFC8482\x00"

    def handle(self, query: wire.Query) -> Answer | None:
        if query.qtype == wire.ANY:
            return Answer(wire.reply_for(query, 0, self.HINFO, (1, 0, 0)), "any_minimal")
        if query.qtype in (251, 252) and not query.tcp:  # IXFR, AXFR need TCP
            return Answer(wire.reply_for(query, wire.REFUSED), "refused")
        return None


_FORWARDED: tuple[Decision, None, None] = (FORWARD, None, None)


class PolicyStage:
    """Operator overrides and the typo detector; decisions and rendered replies are remembered per question."""

    name = "policy"

    def __init__(self, current: Callable[[], Policy], sink: answers.Sink, metrics: Metrics) -> None:
        self.current, self.sink, self.metrics = current, sink, metrics
        self.policy: Policy | None = None
        # question key -> (decision, rendered reply, its counter child or None): resolving labels is slow
        self.seen: dict[tuple, tuple[Decision, bytes | None, Callable[[], None] | None]] = {}

    def handle(self, query: wire.Query) -> Answer | None:
        policy = self.current()
        if policy is not self.policy:  # a reload: forget what the old policy decided
            self.policy, self.seen = policy, {}
        key = (query.key, query.tcp, query.client if policy.client_dependent else None)
        seen = self.seen.get(key)
        if seen is None:
            decision = policy.decide(query.qname, query.qtype, query.client)
            forward = decision.action == "forward" or (decision.action == "tcp-only" and query.tcp)
            reply = None if forward else answers.render(decision, query, self.sink)
            if len(self.seen) > 100_000:
                self.seen.clear()
            if decision is FORWARD:  # most entries: one shared value, nothing for the cyclic GC to walk
                self.seen[key] = seen = _FORWARDED
            else:
                self.seen[key] = seen = (decision, reply, self._counter(query, decision))
        else:
            decision, reply, _ = seen
            if reply is not None:
                reply = wire.with_id_and_question(reply, query)
        if decision.outcome == "forwarded":
            return None
        if seen[2] is not None:
            seen[2]()
        emit_block(query, decision)
        if decision.action == "forward" or (decision.action == "tcp-only" and query.tcp):
            return None
        return Answer(reply, decision.outcome)

    def _counter(self, query: wire.Query, decision: Decision) -> Callable[[], None] | None:
        """The inc() of the counter child this decision counts on (the labels depend only on the key)."""
        qtype = QTYPES.get(query.qtype, "other")
        if decision.typo is not None:
            m = decision.typo
            if decision.outcome == "logged_typo":
                return self.metrics.typo_would_block.labels(m.protected, m.typo_class, qtype).inc
            return self.metrics.typo_blocks.labels(m.protected, m.typo_class, decision.action, qtype).inc
        if decision.rpz is not None:
            return self.metrics.rpz_hits.labels(decision.rpz.zone, decision.rpz.action).inc
        return None


class CacheStage:
    """Answer from the reply cache; the forwarder fills it."""

    name = "cache"

    def __init__(self, cache: Cache, metrics: Metrics) -> None:
        self.cache, self.metrics = cache, metrics
        self._requests, self._hits = metrics.cache_requests.inc, metrics.cache_hits.inc  # bound once: hot path

    def handle(self, query: wire.Query) -> Answer | None:
        self._requests()
        reply = self.cache.get(query)
        if reply is None:
            return None
        self._hits()
        return Answer(reply, "cached")


class Forwarder:
    """The last stage, and the only asynchronous one: ask the upstreams, fill the cache, serve stale on failure."""

    name = "forward"

    def __init__(self, pool: UpstreamPool, cache: Cache, metrics: Metrics) -> None:
        self.pool, self.cache, self.metrics = pool, cache, metrics

    async def resolve(self, query: wire.Query) -> Answer:
        try:
            reply = await self.pool.resolve(query)
        except UpstreamError as exc:
            log.debug("all upstreams failed qname=%s error=%s", query.qname, exc)
            stale = self.cache.get(query, stale=True)
            if stale is not None:
                return Answer(stale, "stale")
            return Answer(wire.reply_for(query, wire.SERVFAIL, ede=(exc.ede, str(exc))), "servfail")
        reply, stored = self.cache.store(query, reply)
        if stored:
            self.metrics.cache_entries.set(len(self.cache))
        return Answer(reply, "forwarded")


@dataclass
class Pipeline:
    stages: tuple[Stage, ...]
    forwarder: Forwarder

    def answer_now(self, query: wire.Query) -> Answer | None:
        """Run the synchronous stages in order; None means the query must be forwarded."""
        for stage in self.stages:
            answer = stage.handle(query)
            if answer is not None:
                return answer
        return None


def build_pipeline(config, current_policy: Callable[[], Policy], cache: Cache, pool: UpstreamPool,
                   metrics: Metrics) -> Pipeline:  # fmt: skip
    """The stage order, fixed here and nowhere else."""
    sink = answers.Sink(config.sink_ipv4, config.sink_ipv6 or None, config.sink_mail_host, config.sink_ttl)
    stages: list[Stage] = [Access(config.allow_clients)]  # not an open resolver: outsiders get REFUSED
    if config.ratelimit_qps > 0:  # before any work is spent on a flooding client
        stages.append(RateLimit(config.ratelimit_qps, config.ratelimit_burst, config.ratelimit_exempt,
                                config.ratelimit_action, metrics))  # fmt: skip
    stages.append(Sanity())  # ANY and transfers never reach policy or upstreams
    stages.append(PolicyStage(current_policy, sink, metrics))  # overrides win, then the typo detector
    stages.append(CacheStage(cache, metrics))  # only what policy lets through is served from cache
    return Pipeline(tuple(stages), Forwarder(pool, cache, metrics))  # forward: the only async stage
