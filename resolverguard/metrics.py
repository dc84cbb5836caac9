"""Every Prometheus metric of resolverguard, declared against an injected registry, and the /metrics server."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)

from . import __version__
from .codes import OTHER_QTYPE, QTYPES, RPZ_ACTIONS, Action, Outcome, Qtype, Rcode, SinkMode, TypoPolicy, rcode_name

disable_created_metrics()  # no *_created series: one per counter child doubled /metrics and meant nothing here

OUTCOMES = tuple(Outcome)  # every member pre-declared: an Answer cannot carry an outcome metrics lack
RCODES = tuple(Rcode)
TRANSPORTS = ("udp", "tcp")
UPSTREAM_ERRORS = ("timeout", "refused", "error", "mismatch", "wrong_source")
MALFORMED = ("unreadable", "response", "formerr", "notimp", "tcp_frame")
LATENCY_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 8)


def rcode_label(reply: bytes | None) -> Rcode:
    if not reply or len(reply) < 4:
        return Rcode.NONE
    return rcode_name(reply[3] & 0xF)


class Metrics:
    """All metrics, with every known label combination created at start so dashboards show 0."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds ...
        self.queries = Counter("resolverguard_queries_total", "Queries received", ["transport", "qtype"], registry=r)
        self.responses = Counter(
            "resolverguard_responses_total", "Responses by outcome and rcode", ["outcome", "rcode"], registry=r
        )
        self.duration = Histogram(
            "resolverguard_request_duration_seconds",
            "Time from query received to reply sent",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.typo_blocks = Counter(
            "resolverguard_typo_blocks_total",
            "Lookups of typo-neighbours blocked, by the protected domain they resemble",
            ["protected_domain", "typo_class", "action", "qtype"],
            registry=r,
        )
        self.typo_would_block = Counter(
            "resolverguard_typo_would_block_total",
            "Typo-neighbour lookups let through in log-only mode",
            ["protected_domain", "typo_class", "qtype"],
            registry=r,
        )
        self.typo_learned_labels = Gauge(
            "resolverguard_typo_learned_labels",
            "Second-level labels learned under protected whole TLDs (mil)",
            registry=r,
            multiprocess_mode="max",
        )
        self.rpz_hits = Counter(
            "resolverguard_rpz_hits_total", "Override (RPZ) rule hits", ["zone", "action"], registry=r
        )
        self.upstream_duration = Histogram(
            "resolverguard_upstream_request_duration_seconds",
            "Upstream exchange time",
            ["upstream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_responses = Counter(
            "resolverguard_upstream_responses_total", "Upstream replies by rcode", ["upstream", "rcode"], registry=r
        )
        self.upstream_errors = Counter(
            "resolverguard_upstream_errors_total",
            "Upstream failures and rejected (spoofed) replies",
            ["upstream", "kind"],
            registry=r,
        )
        self.upstream_up = Gauge(
            "resolverguard_upstream_up",
            "1 while the upstream is considered healthy",
            ["upstream"],
            registry=r,
            multiprocess_mode="min",
        )
        self.cache_requests = Counter("resolverguard_cache_requests_total", "Cache look-ups", registry=r)
        self.cache_hits = Counter("resolverguard_cache_hits_total", "Cache look-ups answered from cache", registry=r)
        self.cache_entries = Gauge(
            "resolverguard_cache_entries", "Replies held in the cache", registry=r, multiprocess_mode="sum"
        )
        self.malformed = Counter("resolverguard_malformed_total", "Malformed packets by kind", ["kind"], registry=r)
        self.ratelimited = Counter(
            "resolverguard_ratelimited_total", "Queries refused by the client rate limit", registry=r
        )
        self.tcp_rejected = Counter(
            "resolverguard_tcp_rejected_total", "TCP connections closed at once: connection cap reached", registry=r
        )
        self.sink_rejections = Counter(
            "resolverguard_sink_rejections_total",
            "Recipients the SMTP sink refused, by the protected domain they resemble",
            ["protected_domain", "typo_class", "mode"],
            registry=r,
        )
        self.sink_sessions = Gauge(
            "resolverguard_sink_sessions", "Open SMTP sink sessions", registry=r, multiprocess_mode="sum"
        )
        self.sink_sessions_refused = Counter(
            "resolverguard_sink_sessions_refused_total",
            "SMTP sink connections answered 421: session cap reached",
            registry=r,
        )
        self.internal_errors = Counter("resolverguard_internal_errors_total", "Bugs: unexpected exceptions", registry=r)
        self.reloads = Counter("resolverguard_policy_reloads_total", "Policy loads by result", ["result"], registry=r)
        self.last_reload = Gauge(
            "resolverguard_policy_last_reload_timestamp_seconds",
            "Unix time of the last successful policy load",
            registry=r,
            multiprocess_mode="max",
        )
        self.rules = Gauge(
            "resolverguard_policy_rules",
            "Override rules loaded, by zone",
            ["zone"],
            registry=r,
            multiprocess_mode="max",
        )
        self.protected = Gauge(
            "resolverguard_protected_domains", "Protected domains loaded", registry=r, multiprocess_mode="max"
        )
        self.build_info = Gauge(
            "resolverguard_build_info", "Build metadata; always 1", ["version"], registry=r, multiprocess_mode="max"
        )
        self.build_info.labels(__version__).set(1)
        for family in (self.typo_blocks, self.typo_would_block, self.rpz_hits):
            family.labels = _with_slot(family.labels)
        for kind in MALFORMED:
            self.malformed.labels(kind)
        for result in ("success", "failure"):
            self.reloads.labels(result)
        for outcome in OUTCOMES:
            self.duration.labels(outcome)
        self._responses = {}
        self._durations = {o: self.duration.labels(o) for o in OUTCOMES}
        for outcome in OUTCOMES:
            for rcode in RCODES:
                self._responses[outcome, rcode] = self.responses.labels(outcome, rcode)
        self._queries = {(t, q): self.queries.labels(t, q) for t in TRANSPORTS for q in (*Qtype, OTHER_QTYPE)}

    # TEMPORARY stand-in for the int64 tally (the metrics branch replaces it): fast-path counts go nowhere
    counts = __import__("array").array("q", bytes(8 * 64))

    def query_slot(self, transport, qtype):
        return 0

    def response_slot(self, outcome, rcode):
        return 0

    def duration_slots(self, outcome):
        return 1, 40

    def declare_policy(
        self,
        entries: Mapping[str, Iterable[str]],
        class_policy: Mapping[str, str],
        zones: Iterable[str],
        qtypes: Iterable[str] = (Qtype.A, Qtype.AAAA, Qtype.MX),
    ) -> None:
        """Create every typo series a block can produce, so increase() alerts fire on the first one.

        entries: protected entry as configured (mil, gmail.com) -> the actions its matches can get. Per
        entry that is one series per typo class and typo qtype (60 with the defaults): a blocking class
        counts in resolverguard_typo_blocks_total, a log-only class (or action) in ..._would_block_total.
        """
        types = tuple(qtypes)
        for entry, actions in entries.items():
            for cls, mode in class_policy.items():
                for qtype in types:
                    for action in actions:
                        if action == Action.LOG_ONLY or mode == TypoPolicy.LOG_ONLY:
                            self.typo_would_block.labels(entry, cls, qtype)
                        else:
                            self.typo_blocks.labels(entry, cls, action, qtype)
        for zone in zones:
            self.rules.labels(zone)
            for action in RPZ_ACTIONS:
                self.rpz_hits.labels(zone, action)

    def declare_sink(self, entries: Iterable[str], typo_classes: Iterable[str]) -> None:
        """The sink's rejection series at 0, per protected entry (as configured), class and mode, and "none"."""
        classes = list(typo_classes)
        for mode in SinkMode:
            self.sink_rejections.labels("none", "none", mode)
            for entry in entries:
                for cls in classes:
                    self.sink_rejections.labels(entry, cls, mode)

    def declare_upstreams(self, names: Iterable[str]) -> None:
        for name in names:
            self.upstream_duration.labels(name)
            self.upstream_up.labels(name).set(float("nan"))  # unknown until the first exchange says up or down
            for kind in UPSTREAM_ERRORS:
                self.upstream_errors.labels(name, kind)
            for rcode in (Rcode.NOERROR, Rcode.NXDOMAIN, Rcode.SERVFAIL):
                self.upstream_responses.labels(name, rcode)

    def query(self, transport: str, qtype: int) -> None:
        self._queries[transport, QTYPES.get(qtype, OTHER_QTYPE)].inc()

    def response(self, outcome: str, reply: bytes | None, seconds: float) -> None:
        self._responses[outcome, rcode_label(reply)].inc()
        self._durations[outcome].observe(seconds)

    def upstream(self, name: str, result: str, seconds: float) -> None:
        """Called by the upstream pool for every exchange: an rcode name or an error kind."""
        if result in UPSTREAM_ERRORS:
            self.upstream_errors.labels(name, result).inc()
            if result in ("timeout", "refused", "error"):
                self.upstream_up.labels(name).set(0)
            return
        self.upstream_responses.labels(name, result).inc()
        self.upstream_duration.labels(name).observe(seconds)
        self.upstream_up.labels(name).set(1)

    def reloaded(self, ok: bool, rules: dict[str, int] | None = None, protected: int | None = None) -> None:
        self.reloads.labels("success" if ok else "failure").inc()
        if ok:
            self.last_reload.set(time.time())
            for zone, count in (rules or {}).items():
                self.rules.labels(zone).set(count)
            if protected is not None:
                self.protected.set(protected)


def serve(registry: CollectorRegistry | None, host: str, port: int) -> None:
    """Serve /metrics from a background thread (aggregating workers in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        ProcessCollector(registry=registry)  # the supervisor's own process
    start_http_server(port, addr=host, registry=registry)


def _with_slot(labels):  # TEMPORARY
    def wrapped(*a):
        child = labels(*a)
        child.slot = 0
        return child

    return wrapped
