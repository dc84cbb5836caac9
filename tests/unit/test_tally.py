"""tally: slots counted in place, exported at scrape time; worker files added up, dead workers' counts kept."""

from __future__ import annotations

import ctypes
import math
import multiprocessing
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resolverguard.errors import ConfigError
from resolverguard.tally import Tally, TallyCollector, WorkersCollector

BUCKETS = (0.001, 0.01, 0.1)


def scrape(collector) -> dict[tuple[str, frozenset], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def k(name: str, **labels: str) -> tuple[str, frozenset]:
    return name, frozenset(labels.items())


def declare(tally: Tally):
    """The families every test tally has: a labelled counter, two gauges, a histogram."""
    return (
        tally.counter("t_hits_total", "Hits", ["kind"]),
        tally.gauge("t_open", "Open things", mode="sum"),
        tally.gauge("t_up", "Up", ["peer"], mode="min"),
        tally.histogram("t_seconds", "Time", ["kind"], BUCKETS),
    )


def record(tally: Tally, hits: int, open_: float, up: float, seconds: list[float]) -> None:
    counter, gauge, up_gauge, histogram = declare(tally)
    counter.labels("a").inc(hits)
    counter.labels("b")  # declared, left at 0
    gauge.set(open_)
    up_gauge.labels("p").set(up)
    for s in seconds:
        histogram.labels("a").observe(s)


def test_a_scrape_shows_what_was_counted_with_cumulative_buckets():
    tally = Tally()
    record(tally, 3, 2, float("nan"), [0.0005, 0.001, 0.002, 0.05, 7.0])
    m = scrape(TallyCollector(tally))
    assert m[k("t_hits_total", kind="a")] == 3
    assert m[k("t_hits_total", kind="b")] == 0
    assert m[k("t_open")] == 2
    assert math.isnan(m[k("t_up", peer="p")])
    buckets = [m[k("t_seconds_bucket", kind="a", le=le)] for le in ("0.001", "0.01", "0.1", "+Inf")]
    assert buckets == [2, 3, 4, 5]  # an observation equal to a bound is in that bucket (le)
    assert m[k("t_seconds_count", kind="a")] == 5
    assert m[k("t_seconds_sum", kind="a")] == pytest.approx(7.0535, abs=1e-8)


def test_slots_written_through_the_buffer_protocol_are_exported_and_never_move():
    tally = Tally()
    counter = declare(tally)[0]
    slot = counter.labels("a").slot
    view = memoryview(tally.counts)  # what a C extension gets from PyObject_GetBuffer
    assert (view.format, view.itemsize, view.readonly) == ("q", 8, False)
    address = ctypes.addressof(ctypes.c_int64.from_buffer(tally.counts))
    view[slot] += 41
    tally.counts[slot] += 1
    for i in range(5_000):  # many series later the buffer is where it was
        counter.labels(f"x{i}")
    assert ctypes.addressof(ctypes.c_int64.from_buffer(tally.counts)) == address
    assert scrape(TallyCollector(tally))[k("t_hits_total", kind="a")] == 42


def test_a_full_tally_says_so_and_labels_are_checked():
    tally = Tally(capacity=8)
    histogram = tally.histogram("t_seconds", "Time", [], BUCKETS)  # 5 slots: 3 buckets, +Inf, the sum
    counter = tally.counter("t_total", "T", ["kind"])
    assert [counter.labels(x).slot for x in "abc"] == [5, 6, 7] and histogram.slot == 0
    assert counter.labels("c") is counter.labels("c")  # an existing series is found, not declared again
    with pytest.raises(ConfigError, match="all 8 slots are taken"):
        counter.labels("d")
    with pytest.raises(ValueError):
        counter.labels("a", "b")


def _worker(directory: str, hits: int, open_: float, up: float, seconds: list[float], ready, stop) -> None:
    tally = Tally(directory)
    record(tally, hits, open_, up, seconds)
    ready.set()
    if stop is not None:
        stop.wait(30)


def test_workers_files_are_summed_and_a_dead_workers_counts_are_kept(tmp_path: Path):
    ctx = multiprocessing.get_context("fork")
    ready_live, ready_dead, stop = ctx.Event(), ctx.Event(), ctx.Event()
    live = ctx.Process(target=_worker, args=(str(tmp_path), 3, 2, 1, [0.0005, 0.05], ready_live, stop))
    dead = ctx.Process(target=_worker, args=(str(tmp_path), 4, 5, 0, [0.002], ready_dead, None))
    live.start()
    dead.start()
    try:
        assert ready_live.wait(30) and ready_dead.wait(30)
        dead.join(30)
        collector = WorkersCollector(str(tmp_path))
        m = scrape(collector)
        assert m[k("t_hits_total", kind="a")] == 7  # both workers
        assert m[k("t_open")] == 2  # the live worker only (a dead one's open sessions are gone)
        assert m[k("t_up", peer="p")] == 1
        buckets = [m[k("t_seconds_bucket", kind="a", le=le)] for le in ("0.001", "0.01", "0.1", "+Inf")]
        assert buckets == [1, 2, 3, 3]
        assert m[k("t_seconds_count", kind="a")] == 3
        assert m[k("t_seconds_sum", kind="a")] == pytest.approx(0.0525, abs=1e-8)
        assert len(list(tmp_path.glob("tally-*.counts"))) == 1  # the dead worker's files were folded in
        assert scrape(collector) == m  # ... and stay counted
    finally:
        stop.set()
        live.join(30)
    m = scrape(collector)
    assert m[k("t_hits_total", kind="a")] == 7  # every worker gone: the counters do not go down
    assert m[k("t_seconds_count", kind="a")] == 3
    assert k("t_open") not in m and k("t_up", peer="p") not in m
    assert list(tmp_path.iterdir()) == []


def test_a_gauge_is_combined_over_live_workers_by_its_mode_ignoring_unknown_values(tmp_path: Path):
    workers = [Tally(str(tmp_path)) for _ in range(3)]  # all alive: this process holds their locks
    for tally, (open_, up) in zip(workers, [(1, float("nan")), (2, 0), (4, 1)], strict=True):
        record(tally, 1, open_, up, [])
    m = scrape(WorkersCollector(str(tmp_path)))
    assert m[k("t_open")] == 7  # sum
    assert m[k("t_up", peer="p")] == 0  # min of the workers that know (NaN: no exchange yet)
    assert m[k("t_hits_total", kind="a")] == 3


def test_a_worker_series_declared_after_a_scrape_shows_in_the_next(tmp_path: Path):
    tally = Tally(str(tmp_path))  # this process is the live worker
    counter = declare(tally)[0]
    collector = WorkersCollector(str(tmp_path))
    assert k("t_hits_total", kind="late") not in scrape(collector)
    counter.labels("late").inc()
    assert scrape(collector)[k("t_hits_total", kind="late")] == 1


def test_series_declared_from_two_threads_never_share_a_slot():
    import sys
    import threading

    tally = Tally()
    family = tally.counter("resolverguard_test_total", "test", ["n"])
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: a missing lock shows at once
    try:
        workers = [
            threading.Thread(target=lambda k=k: [family.labels(f"{k}-{i}") for i in range(2000)]) for k in range(2)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        again = threading.Thread(target=lambda: [family.labels(f"0-{i}") for i in range(2000)])  # same series
        again.start()
        again.join()
    finally:
        sys.setswitchinterval(interval)
    slots = [slot for _, _, slot in tally.series]
    assert len(slots) == len(set(slots)) == 4000 == tally.used
