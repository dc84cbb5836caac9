"""Every metric of resolverguard, counted in place in a Tally and exported at scrape time; the /metrics server."""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

from . import __version__
from .codes import (
    DOWN_FAILURES,
    OTHER_QTYPE,
    QTYPE_NUMBERS,
    QTYPES,
    RPZ_ACTIONS,
    Action,
    Malformed,
    Outcome,
    Qtype,
    Rcode,
    SinkMode,
    TypoPolicy,
    UpstreamFailure,
    rcode_name,
)
from .tally import Tally, TallyCollector, WorkersCollector

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"  # --workers: each worker's tally is a file there
OUTCOMES = tuple(Outcome)  # every member pre-declared: an Answer cannot carry an outcome metrics lack
RCODES = tuple(Rcode)
TRANSPORTS = ("udp", "tcp")
UPSTREAM_ERRORS = tuple(UpstreamFailure)
MALFORMED = tuple(Malformed)
EVENTS_DROPPED = ("full", "write_error")  # why an event was not written (resolverguard/events.py)
LATENCY_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 8)
LATENCY_BUCKETS_NS = tuple(round(b * 1e9) for b in LATENCY_BUCKETS)  # the same bounds for compiled code


def bucket_index(seconds: float) -> int:
    """The latency bucket of an observation: the first bound >= seconds; len(LATENCY_BUCKETS) is +Inf."""
    return bisect_left(LATENCY_BUCKETS, seconds)


class Metrics:
    """All metrics, with every known label combination created at start so dashboards show 0.

    Recording is `counts[slot] += 1` on the tally (no lock: one event loop thread counts, the /metrics thread
    only reads). The slot methods below are the layout compiled code counts into.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, directory: str | None = None, joined: bool = False
    ) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds ...
        t = self.tally = Tally(directory if directory is not None else os.environ.get(MULTIPROC_DIR))
        self.counts = t.counts  # int64 slots, buffer protocol format 'q'; never resized
        self.queries = t.counter("resolverguard_queries_total", "Queries received", ["transport", "qtype"])
        self.responses = t.counter(
            "resolverguard_responses_total", "Responses by outcome and rcode", ["outcome", "rcode"]
        )
        self.duration = t.histogram(
            "resolverguard_request_duration_seconds",
            "Time from query received to reply sent",
            ["outcome"],
            LATENCY_BUCKETS,
        )
        self.typo_blocks = t.counter(
            "resolverguard_typo_blocks_total",
            "Lookups of typo-neighbours blocked, by the protected domain they resemble",
            ["protected_domain", "typo_class", "action", "qtype"],
        )
        self.typo_would_block = t.counter(
            "resolverguard_typo_would_block_total",
            "Typo-neighbour lookups let through in log-only mode",
            ["protected_domain", "typo_class", "qtype"],
        )
        self.typo_learned_labels = t.gauge(
            "resolverguard_typo_learned_labels",
            "Second-level labels learned under protected whole TLDs (mil)",
            mode="max",
        )
        self.rpz_hits = t.counter("resolverguard_rpz_hits_total", "Override (RPZ) rule hits", ["zone", "action"])
        self.upstream_duration = t.histogram(
            "resolverguard_upstream_request_duration_seconds", "Upstream exchange time", ["upstream"], LATENCY_BUCKETS
        )
        self.upstream_responses = t.counter(
            "resolverguard_upstream_responses_total", "Upstream replies by rcode", ["upstream", "rcode"]
        )
        self.upstream_errors = t.counter(
            "resolverguard_upstream_errors_total",
            "Upstream failures and rejected (spoofed) replies",
            ["upstream", "kind"],
        )
        self.upstream_up = t.gauge(
            "resolverguard_upstream_up", "1 while the upstream is considered healthy", ["upstream"], mode="min"
        )
        self.forwarding_loops = t.counter(
            "resolverguard_forwarding_loops_total",
            "Queries refused because they had been through this guard already (a forwarding loop)",
        )
        # hits are resolverguard_responses_total{outcome="cached"}
        self.cache_requests = t.counter("resolverguard_cache_requests_total", "Cache look-ups")
        self.cache_entries = t.gauge("resolverguard_cache_entries", "Replies held in the cache", mode="sum")
        self.malformed = t.counter("resolverguard_malformed_total", "Malformed packets by kind", ["kind"])
        self.tcp_rejected = t.counter(
            "resolverguard_tcp_rejected_total", "TCP connections closed at once: connection cap reached"
        )
        self.sink_rejections = t.counter(
            "resolverguard_sink_rejections_total",
            "Recipients the SMTP sink refused, by the protected domain they resemble",
            ["protected_domain", "typo_class", "mode"],
        )
        self.sink_sessions = t.gauge("resolverguard_sink_sessions", "Open SMTP sink sessions", mode="sum")
        self.sink_sessions_refused = t.counter(
            "resolverguard_sink_sessions_refused_total", "SMTP sink connections answered 421: session cap reached"
        )
        self.sink_events_folded = t.counter(
            "resolverguard_sink_events_folded_total",
            "SMTP sink refusals not written as an event line of their own (per-MTA rate limit); see sink_folded events",
        )
        self.events_dropped = t.counter(
            "resolverguard_events_dropped_total",
            "Events not written: the writer could not keep up (full) or the write failed (write_error)",
            ["reason"],
        )
        for reason in EVENTS_DROPPED:
            self.events_dropped.labels(reason)
        self.internal_errors = t.counter("resolverguard_internal_errors_total", "Bugs: unexpected exceptions")
        self.reloads = t.counter("resolverguard_policy_reloads_total", "Policy loads by result", ["result"])
        self.last_reload = t.gauge(
            "resolverguard_policy_last_reload_timestamp_seconds", "Unix time of the last successful policy load"
        )
        self.rules = t.gauge("resolverguard_policy_rules", "Override rules loaded, by zone", ["zone"])
        self.protected = t.gauge("resolverguard_protected_domains", "Protected domains loaded")
        self.build_info = t.gauge("resolverguard_build_info", "Build metadata; always 1", ["version"])
        self.build_info.labels(__version__).set(1)
        self.submission_refusals = t.counter(
            "resolverguard_submission_refusals_total",
            "Recipients the policy service refused at RCPT, by the protected domain they resemble",
            ["protected_domain", "typo_class", "mode"],
        )
        self.policy_requests = t.counter(
            "resolverguard_policy_requests_total", "Policy service requests answered, by reply", ["reply"]
        )
        self.policy_errors = t.counter(
            "resolverguard_policy_errors_total", "Policy service requests refused and closed, by problem", ["kind"]
        )
        self.policy_connections = t.gauge(
            "resolverguard_policy_connections", "Open policy service connections", mode="sum"
        )
        self.exceptions_active = t.gauge("resolverguard_exceptions_active", "Exceptions in force", mode="max")
        self.exceptions_expiring = t.gauge(
            "resolverguard_exceptions_expiring", "Exceptions in force that end within 7 days", mode="max"
        )
        for kind in MALFORMED:
            self.malformed.labels(kind)
        for result in ("success", "failure"):
            self.reloads.labels(result)
        # the hot path's slots, resolved once: per transport, qtype number -> slot (and the slot of "other")
        self._queries = {
            transport: (
                {QTYPE_NUMBERS[q]: self.query_slot(transport, QTYPE_NUMBERS[q]) for q in Qtype},
                self.queries.labels(transport, OTHER_QTYPE).slot,
            )
            for transport in TRANSPORTS
        }
        # per outcome: the response slot of each rcode nibble (16: no reply), first bucket, sum slot
        self._outcomes = {
            o: (
                tuple(self.response_slot(o, rcode_name(n)) for n in range(16)) + (self.response_slot(o, Rcode.NONE),),
                *self.duration_slots(o),
            )
            for o in OUTCOMES
        }
        # joined: this process's tally is one file of `directory`, and the registry adds up every file there
        # (this process's and its SMTP sink process's), the way the --workers supervisor does
        r.register(WorkersCollector(directory) if joined and directory else TallyCollector(t))

    def query_slot(self, transport: str, qtype: int) -> int:
        """The slot of resolverguard_queries_total{transport, qtype} (an unnamed qtype number is "other")."""
        return self.queries.labels(transport, QTYPES.get(qtype, OTHER_QTYPE)).slot

    def response_slot(self, outcome: str, rcode: Rcode | str) -> int:
        """The slot of resolverguard_responses_total{outcome, rcode}."""
        return self.responses.labels(outcome, rcode).slot

    def duration_slots(self, outcome: str) -> tuple[int, int]:
        """resolverguard_request_duration_seconds{outcome}: the slot of its first bucket counter, and its sum slot.

        len(LATENCY_BUCKETS) + 1 non-cumulative counters (the last is +Inf; see bucket_index), then the sum in
        integer nanoseconds; the collector makes the buckets cumulative and the sum seconds.
        """
        first = self.duration.labels(outcome).slot
        return first, first + len(LATENCY_BUCKETS) + 1

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

    def declare_submission(self, entries: Iterable[str], typo_classes: Iterable[str]) -> None:
        """The policy service's series at 0: refusals per protected entry, class and mode; replies; problems."""
        from .delegation import PROBLEMS, REPLIES

        classes = list(typo_classes)
        for mode in SinkMode:
            for entry in entries:
                for cls in classes:
                    self.submission_refusals.labels(entry, cls, mode)
        for reply in REPLIES:
            self.policy_requests.labels(reply)
        for kind in PROBLEMS:
            self.policy_errors.labels(kind)

    def declare_upstreams(self, names: Iterable[str]) -> None:
        for name in names:
            self.upstream_duration.labels(name)
            self.upstream_up.labels(name).set(float("nan"))  # unknown until the first exchange says up or down
            for kind in UPSTREAM_ERRORS:
                self.upstream_errors.labels(name, kind)
            for rcode in (Rcode.NOERROR, Rcode.NXDOMAIN, Rcode.SERVFAIL):
                self.upstream_responses.labels(name, rcode)

    def query(self, transport: str, qtype: int) -> None:
        slots, other = self._queries[transport]
        self.counts[slots.get(qtype, other)] += 1

    def reply_slots(self, outcome: str, reply: bytes | None) -> tuple[int, int, int]:
        """The slots one response counts in: responses_total{outcome, rcode read from the reply (None or short:
        "none")}, and its duration's first bucket and sum (duration_slots)."""
        rcodes, first, total = self._outcomes[outcome]
        return rcodes[reply[3] & 0xF] if reply is not None and len(reply) > 3 else rcodes[16], first, total

    def response(self, outcome: str, reply: bytes | None, seconds: float) -> None:
        """One response and its duration."""
        response, first, total = self.reply_slots(outcome, reply)
        counts = self.counts
        counts[response] += 1
        counts[first + bisect_left(LATENCY_BUCKETS, seconds)] += 1
        counts[total] += int(seconds * 1e9)

    def upstream(self, name: str, result: str, seconds: float) -> None:
        """Called by the upstream pool for every exchange: an rcode name or an error kind."""
        if result in UPSTREAM_ERRORS:
            self.upstream_errors.labels(name, result).inc()
            if result in DOWN_FAILURES:
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
    """Serve /metrics from a background thread (in the --workers supervisor: the workers' files added up)."""
    directory = os.environ.get(MULTIPROC_DIR)
    if directory:
        registry = CollectorRegistry()
        registry.register(WorkersCollector(directory))
        ProcessCollector(registry=registry)  # the supervisor's own process
    start_http_server(port, addr=host, registry=registry)


EXPORT_REFUSALS = ("acl", "no_key", "bad_key", "bad_signature")


class ExportMetrics:
    """The RPZ export's metrics (resolverguard/export/), on the tally like every other metric.

    ``on``: the guard's Metrics (its tally, so --workers adds them up with the rest), or a bare
    CollectorRegistry (a tally of its own, exported through that registry).
    """

    def __init__(self, on: Metrics | CollectorRegistry, secondaries: Iterable[str]) -> None:
        if isinstance(on, Metrics):
            tally = on.tally
        else:
            tally = Tally()
            on.register(TallyCollector(tally))
        self.refused = tally.counter(
            "resolverguard_export_refused_total", "Transfers of the export zone refused, by reason", ["reason"]
        )
        for reason in EXPORT_REFUSALS:
            self.refused.labels(reason)
        self.acked = tally.gauge(
            "resolverguard_export_secondary_serial",
            "Last export serial each configured secondary acknowledged (NOTIFY)",
            ["secondary"],
            mode="max",
        )
        for secondary in secondaries:
            self.acked.labels(secondary)
