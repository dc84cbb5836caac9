"""The query pipeline: the Stage protocol and build_pipeline(), the only place that fixes stage order."""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.name
import dns.rdataclass

from . import answers, events, wire
from .cache import Cache
from .codes import OTHER_QTYPE, QTYPES, Action, Outcome, Verdict
from .errors import UpstreamError
from .metrics import Metrics
from .policy import FORWARD, Decision, Policy
from .upstream import UpstreamPool

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Answer:
    """A stage's reply: bytes to send (None: send nothing), the outcome recorded in metrics, and whether the UDP
    fast path (fastpath.py) may give it again.

    The outcome is an Outcome member (checked here, while the query is still inside the server's try), and
    metrics pre-declare every member: recording it after the reply went out cannot fail.
    """

    reply: bytes | None
    outcome: Outcome
    fresh_for: float = 0.0  # seconds the same reply answers the same query octets (0: never remembered)
    slots: tuple[int, ...] = ()  # counter slots answering it counted besides query, response and duration
    renew: tuple | None = None  # a cache hit's way to count its TTLs down later (FastTable.remember)
    event: str | None = None  # a block's event line tail: the fast path hands each lookup it answers back

    def __post_init__(self) -> None:
        if type(self.outcome) is not Outcome:
            self.outcome = Outcome(self.outcome)  # ValueError for a word metrics do not know


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
        return Answer(wire.reply_for(query, wire.REFUSED), Outcome.REFUSED)


class RateLimit:
    """Per-client token bucket; clients in the exempt networks (the MTAs) are never limited."""

    name = "ratelimit"

    def __init__(
        self,
        qps: float,
        burst: float,
        exempt: Sequence[str],
        action: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.qps, self.burst = qps, max(burst, qps)
        self.exempt = Access(exempt)
        self.drop = action == Action.DROP
        self.clock = clock
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
        self.buckets[query.client] = (tokens, now)  # counted as resolverguard_responses_total{outcome="ratelimited"}
        return Answer(None if self.drop else wire.reply_for(query, wire.REFUSED), Outcome.RATELIMITED)


class Sanity:
    """Queries refused before any work: zone transfers over UDP, and classes other than IN and CH.

    An odd class (HS, NONE, CLASS42) is never forwarded: upstreams answer those in ways (REFUSED without a
    question) that would otherwise count against their health, so one client could move everyone's traffic.
    """

    name = "sanity"
    CLASSES = frozenset({dns.rdataclass.IN, dns.rdataclass.CH})

    def handle(self, query: wire.Query) -> Answer | None:
        if query.qclass not in self.CLASSES:
            return Answer(wire.reply_for(query, wire.REFUSED), Outcome.REFUSED)
        if query.qtype in (251, 252) and not query.tcp:  # IXFR, AXFR need TCP
            return Answer(wire.reply_for(query, wire.REFUSED), Outcome.REFUSED)
        return None


# RFC 8482 section 4.2: one synthesised HINFO "RFC8482" answers ANY for a name the policy lets through
HINFO_RFC8482 = b"\xc0\x0c\x00\x0d\x00\x01\x00\x00\x0e\x10\x00\x09\x07RFC8482\x00"


def minimal_any(query: wire.Query) -> Answer:
    """The RFC 8482 answer to ANY, given only after the policy (a blocked name must not appear to exist)."""
    return Answer(wire.reply_for(query, 0, HINFO_RFC8482, (1, 0, 0)), Outcome.ANY_MINIMAL, math.inf)


class SinkHost:
    """The sink mail host's own A/AAAA: MTAs look up the MX host themselves, and upstream does not know it."""

    name = "sink_host"

    def __init__(self, sink: answers.Sink) -> None:
        self.sink = sink
        self.host = dns.name.from_text(sink.mail_host).canonicalize().to_wire()  # how a query.key starts

    def handle(self, query: wire.Query) -> Answer | None:
        if not query.key.startswith(self.host):  # compared as octets: decoding every qname costs a hit 4 µs
            return None
        reply = answers.sink_host(query, self.sink)
        return None if reply is None else Answer(reply, Outcome.SINK_HOST, math.inf)  # fixed by the config


_FORWARDED: tuple[Decision, None, None, None] = (FORWARD, None, None, None)
# The verdicts that answer the query themselves (the others forward it), and the outcome they count as.
_BLOCKED = {Verdict.BLOCKED_TYPO: Outcome.BLOCKED_TYPO, Verdict.BLOCKED_OVERRIDE: Outcome.BLOCKED_OVERRIDE}


def _forwards(decision: Decision, query: wire.Query) -> bool:
    """Whether the query goes on to cache and upstream: forward decisions, and tcp-only ones over TCP."""
    return decision.action == Action.FORWARD or (decision.action == Action.TCP_ONLY and query.tcp)


class PolicyStage:
    """Operator overrides and the typo detector; decisions and rendered replies are remembered per question."""

    name = "policy"

    def __init__(self, current: Callable[[], Policy], sink: answers.Sink, metrics: Metrics) -> None:
        self.current, self.sink, self.metrics = current, sink, metrics
        self.policy: Policy | None = None
        # question key -> (decision, rendered reply, its counter child or None, its event line tail): resolving
        # labels and formatting the event's fields are slow
        self.seen: dict[tuple, tuple[Decision, bytes | None, object | None, str]] = {}

    def handle(self, query: wire.Query) -> Answer | None:
        policy = self.current()
        if policy is not self.policy:  # a reload, or a label learned (dmdc.ml is blocked now): forget decisions
            self.policy, self.seen = policy, {}
        key = (query.key, query.tcp, query.client if policy.client_dependent else None)
        seen = self.seen.get(key)
        if seen is None:
            decision = policy.decide(query.qname, query.qtype, query.client)
            forward = _forwards(decision, query)
            reply = None if forward else answers.render(decision, query, self.sink)
            if len(self.seen) > 100_000:
                self.seen.clear()
            if decision is FORWARD:  # most entries: one shared value, nothing for the cyclic GC to walk
                self.seen[key] = seen = _FORWARDED
            else:
                tail = events.block_tail(query, decision)
                self.seen[key] = seen = (decision, reply, self._counter(query, decision), tail)
        else:
            decision, reply, _, _ = seen
            if reply is not None:
                reply = wire.with_id_and_question(reply, query)
        if decision.outcome == Verdict.FORWARDED:
            return minimal_any(query) if query.qtype == wire.ANY else None
        counter = seen[2]
        if counter is not None:
            counter.inc()
        logged = events.emit_block(query, decision, seen[3])
        if _forwards(decision, query):
            query.memo = False  # a counted (or logged) lookup forwarded: never answered from memory
            return minimal_any(query) if query.qtype == wire.ANY else None
        slots = () if counter is None else (counter.slot,)
        # until the policy changes; with the event log on, the fast path hands back each lookup it answers
        return Answer(reply, _BLOCKED[decision.outcome], math.inf, slots, event=seen[3] if logged else None)

    def _counter(self, query: wire.Query, decision: Decision):
        """The counter child this decision counts on (the labels depend only on the key), or None."""
        qtype = QTYPES.get(query.qtype, OTHER_QTYPE)
        if decision.typo is not None:
            m, entry = decision.typo, self.policy.entry_of(decision.typo)  # mil, not navy.mil: series pre-declared
            if decision.outcome == Verdict.LOGGED_TYPO:
                return self.metrics.typo_would_block.labels(entry, m.typo_class, qtype)
            return self.metrics.typo_blocks.labels(entry, m.typo_class, decision.action, qtype)
        if decision.rpz is not None:
            return self.metrics.rpz_hits.labels(decision.rpz.zone, decision.rpz.action)
        return None


class CacheStage:
    """Answer from the reply cache; the forwarder fills it. Hits count as responses_total{outcome="cached"}."""

    name = "cache"

    def __init__(self, cache: Cache, metrics: Metrics) -> None:
        self.cache, self.counts, self.requests = cache, metrics.counts, metrics.cache_requests.slot

    def handle(self, query: wire.Query) -> Answer | None:
        self.counts[self.requests] += 1
        hit = self.cache.lookup(query)
        if hit is not None:
            return Answer(hit[0], Outcome.CACHED, hit[1], (self.requests,), hit[2])
        if not query.flags & wire.RD:  # no recursion desired, nothing held: refused, never forwarded (as Unbound)
            return Answer(wire.reply_for(query, wire.REFUSED), Outcome.REFUSED)
        return None


class Forwarder:
    """The last stage, and the only asynchronous one: ask the upstreams, fill the cache, serve stale on failure."""

    name = "forward"

    def __init__(
        self,
        pool: UpstreamPool,
        cache: Cache,
        metrics: Metrics,
        on_answer: Callable[[wire.Query, bytes], None] | None = None,
    ) -> None:
        self.pool, self.cache, self.metrics = pool, cache, metrics
        self.on_answer = on_answer  # sees every upstream reply (the typo guard learns .mil labels)

    async def resolve(self, query: wire.Query) -> Answer:
        """The answer to a forwarded query (the coroutine form of forward())."""
        try:
            reply = await self.pool.resolve(query)
        except UpstreamError as exc:
            return self.failed(query, exc)
        return self.answered(query, reply)

    def forward(self, query: wire.Query, done: Callable[[Answer | Exception], None]) -> None:
        """resolve() without a task: done(answer) is called once, from the pool's callback (or now); with an
        exception instead of an answer when something in the guard failed (for the server to log)."""

        def settle(result: bytes | Exception) -> None:
            try:
                if isinstance(result, bytes):
                    answer = self.answered(query, result)
                elif isinstance(result, UpstreamError):
                    answer = self.failed(query, result)
                else:
                    answer = result
            except Exception as exc:  # passed on to the server's catch-all
                answer = exc
            done(answer)

        self.pool.submit(query, settle)

    def failed(self, query: wire.Query, exc: UpstreamError) -> Answer:
        log.debug("all upstreams failed qname=%s error=%s", query.qname, exc)
        stale = self.cache.get(query, stale=True)
        if stale is not None:
            return Answer(stale, Outcome.STALE)
        return Answer(wire.reply_for(query, wire.SERVFAIL, ede=(exc.ede, str(exc))), Outcome.SERVFAIL)

    def answered(self, query: wire.Query, reply: bytes) -> Answer:
        reply, scan = wire.forwarded(reply, query.flags & wire.CD)  # one walk: cleaned, and scanned for the cache
        if scan is not None:
            reply, stored = self.cache.store(query, reply, scan)
            if stored:
                self.metrics.cache_entries.set(len(self.cache))
        if self.on_answer is not None:
            self.on_answer(query, reply)
        return Answer(reply, Outcome.FORWARDED)


@dataclass
class Pipeline:
    stages: tuple[Stage, ...]
    forwarder: Forwarder

    def unthrottled(self, client: str) -> bool:
        """Whether every query of client passes the access and rate-limit stages (the fast path may answer it)."""
        for stage in self.stages:
            if isinstance(stage, Access) and not stage.allowed(client):
                return False
            if isinstance(stage, RateLimit) and not stage.exempt.allowed(client):
                return False
        return True

    def answer_now(self, query: wire.Query) -> Answer | None:
        """Run the synchronous stages in order; None means the query must be forwarded."""
        for stage in self.stages:
            answer = stage.handle(query)
            if answer is not None:
                return answer
        return None


def build_pipeline(
    config,
    current_policy: Callable[[], Policy],
    cache: Cache,
    pool: UpstreamPool,
    metrics: Metrics,
    learn: Callable[[wire.Query, bytes], None] | None = None,
) -> Pipeline:
    """The stage order, fixed here and nowhere else; learn (PolicyHolder.learn) sees every upstream reply."""
    sink = answers.Sink(config.sink_ipv4, config.sink_ipv6 or None, config.sink_mail_host, config.sink_ttl)
    stages: list[Stage] = [Access(config.allow_clients)]  # not an open resolver: outsiders get REFUSED
    if config.ratelimit_qps > 0:  # before any work is spent on a flooding client
        stages.append(
            RateLimit(config.ratelimit_qps, config.ratelimit_burst, config.ratelimit_exempt, config.ratelimit_action)
        )
    stages.append(Sanity())  # ANY and transfers never reach policy or upstreams
    stages.append(SinkHost(sink))  # the host the sink MX names: answered here, never forwarded
    stages.append(PolicyStage(current_policy, sink, metrics))  # overrides win, then the typo detector
    stages.append(CacheStage(cache, metrics))  # only what policy lets through is served from cache
    return Pipeline(tuple(stages), Forwarder(pool, cache, metrics, learn))  # forward: the only async stage
