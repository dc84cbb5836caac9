"""The tally: metrics as int64 slots counted in place (no lock), the series that own them, and their collectors.

A Tally is one fixed block of CAPACITY int64 slots, never resized or moved: compiled code may hold a pointer
into `counts` (buffer protocol, format 'q') and increment slots itself. A series owns one slot (counter,
gauge) or a run of them (histogram: one non-cumulative counter per bucket, +Inf last, then the sum in
integer nanoseconds). Gauges are the same slots read as doubles (`values`, format 'd').

Nothing is exported while counting: TallyCollector turns the slots into Prometheus families at scrape time
(buckets made cumulative, the sum turned into seconds). With --workers each worker's tally is a file of the
metrics directory (`tally-*.counts`) with a layout beside it (`tally-*.layout`, one JSON line per family or
series, appended as series are declared), and WorkersCollector adds them up in the supervisor.
"""

from __future__ import annotations

import fcntl
import json
import math
import mmap
import os
import tempfile
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from .errors import ConfigError

CAPACITY = 1 << 21  # slots: 16 MiB of address space, touched only as series are declared (about 100 per entry)
COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
GAUGE_MODES = ("sum", "max", "min")  # how --workers combines a gauge over the live workers


@dataclass(frozen=True)
class Spec:
    """What a family is: everything the exposition needs besides the numbers (also a layout file's line)."""

    kind: str
    name: str
    documentation: str
    labelnames: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()  # histograms: the finite upper bounds, ascending
    mode: str = "max"  # gauges: GAUGE_MODES

    @property
    def width(self) -> int:
        """Slots per series."""
        return len(self.buckets) + 2 if self.kind == HISTOGRAM else 1


class Tally:
    """The slots and, in allocation order, the series (spec, label values, first slot) that own them."""

    def __init__(self, directory: str | None = None, capacity: int = CAPACITY) -> None:
        self._layout = -1
        if directory is None:
            self._map = mmap.mmap(-1, 8 * capacity)
        else:  # a worker: a file the supervisor reads, locked while this process lives
            fd, path = tempfile.mkstemp(prefix="tally-", suffix=".counts", dir=directory)
            fcntl.flock(fd, fcntl.LOCK_EX)  # the kernel drops it when the process dies, however it dies
            os.ftruncate(fd, 8 * capacity)  # sparse: untouched slots take no disk
            self._map = mmap.mmap(fd, 8 * capacity)
            self._fd = fd  # kept open: closing it would release the lock
            self._layout = os.open(
                path.removesuffix(".counts") + ".layout", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
            )
        self.counts = memoryview(self._map).cast("q")
        self.values = memoryview(self._map).cast("d")
        self.specs: list[Spec] = []
        self.series: list[tuple[Spec, tuple[str, ...], int]] = []  # append-only: scrapes copy it without a lock
        self.used = 0
        # a series is declared from the loop and from the SMTP sink's thread: one allocation at a time, or two
        # series could share a slot (counting needs no lock: each slot has one counting thread)
        self.lock = threading.RLock()

    def family(self, spec: Spec) -> Family:
        self.specs.append(spec)
        self._write({"family": asdict(spec)})
        return Family(self, spec)

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Family:
        return self.family(Spec(COUNTER, name, documentation, tuple(labelnames)))

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = (), mode: str = "max") -> Family:
        assert mode in GAUGE_MODES, mode
        return self.family(Spec(GAUGE, name, documentation, tuple(labelnames), mode=mode))

    def histogram(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]) -> Family:
        return self.family(Spec(HISTOGRAM, name, documentation, tuple(labelnames), tuple(buckets)))

    def allocate(self, spec: Spec, labels: tuple[str, ...]) -> int:
        """The first of spec.width fresh slots for a new series (all 0); ConfigError when none are left."""
        with self.lock:
            slot = self.used
            if slot + spec.width > len(self.counts):
                raise ConfigError(
                    f"metrics: all {len(self.counts)} slots are taken declaring {spec.name}{list(labels)}; "
                    "fewer protected entries, RPZ zones or upstreams, or a larger tally.CAPACITY"
                )
            self.used = slot + spec.width
            self.series.append((spec, labels, slot))
            self._write([spec.name, labels, slot])
            return slot

    def rows(self) -> Iterator[tuple[Spec, tuple[str, ...], object]]:
        """(spec, labels, raw value) per series: an int, a float (gauges) or a histogram's list of slots."""
        counts, values = self.counts, self.values
        for spec, labels, slot in self.series[:]:
            yield spec, labels, _raw(spec, counts, values, slot)

    def _write(self, line: object) -> None:
        if self._layout >= 0:  # one write per line: the supervisor never reads half a line it then trusts
            os.write(self._layout, (json.dumps(line) + "\n").encode())


class Family:
    """One metric family; .labels(...) returns the series of those label values, declaring it (at 0) if new."""

    def __init__(self, tally: Tally, spec: Spec) -> None:
        self.tally, self.spec = tally, spec
        self.children: dict[tuple, Child] = {}
        self._only = None if spec.labelnames else self.labels()

    def labels(self, *values: object) -> Child:
        child = self.children.get(values)
        if child is None:
            key = tuple(str(v) for v in values)
            if len(key) != len(self.spec.labelnames):
                raise ValueError(f"{self.spec.name} takes labels {self.spec.labelnames}, got {key}")
            with self.tally.lock:  # two threads declaring one series get one slot
                child = self.children.get(key)
                if child is None:
                    slot = self.tally.allocate(self.spec, key)
                    child = self.children[key] = _CHILD[self.spec.kind](self.tally, self.spec, slot)
        return child

    # an unlabelled family is its own only series
    @property
    def slot(self) -> int:
        return self._only.slot

    def inc(self, n: int = 1) -> None:
        self._only.inc(n)

    def set(self, value: float) -> None:
        self._only.set(value)

    def observe(self, seconds: float) -> None:
        self._only.observe(seconds)


class Counter:
    """One counter series: `slot` indexes the tally's counts; hot code binds it once and does counts[slot] += 1."""

    __slots__ = ("counts", "slot")

    def __init__(self, tally: Tally, spec: Spec, slot: int) -> None:
        self.counts, self.slot = tally.counts, slot

    def inc(self, n: int = 1) -> None:
        self.counts[self.slot] += n

    @property
    def value(self) -> int:
        return self.counts[self.slot]


class Gauge:
    """One gauge series: a double in the slot."""

    __slots__ = ("values", "slot")

    def __init__(self, tally: Tally, spec: Spec, slot: int) -> None:
        self.values, self.slot = tally.values, slot

    def set(self, value: float) -> None:
        self.values[self.slot] = value


class Histogram:
    """One histogram series: non-cumulative bucket counters from `slot` (+Inf last), then the sum in ns."""

    __slots__ = ("counts", "slot", "buckets")

    def __init__(self, tally: Tally, spec: Spec, slot: int) -> None:
        self.counts, self.slot, self.buckets = tally.counts, slot, spec.buckets

    def observe(self, seconds: float) -> None:
        self.counts[self.slot + bisect_left(self.buckets, seconds)] += 1
        self.counts[self.slot + len(self.buckets) + 1] += int(seconds * 1e9)


Child = Counter | Gauge | Histogram
_CHILD = {COUNTER: Counter, GAUGE: Gauge, HISTOGRAM: Histogram}


def _raw(spec: Spec, counts: Sequence[int], values: Sequence[float], slot: int) -> object:
    if spec.kind == GAUGE:
        return values[slot]
    if spec.kind == HISTOGRAM:
        return list(counts[slot : slot + spec.width])
    return counts[slot]


def families(specs: Iterable[Spec], rows: Iterable[tuple[Spec, tuple[str, ...], object]]) -> Iterator[Metric]:
    """The exposition of rows, one family per spec in spec order (families without series included)."""
    built: dict[str, Metric] = {}
    for spec in specs:
        if spec.name not in built:
            built[spec.name] = _empty(spec)
    for spec, labels, raw in rows:
        family = built.get(spec.name)
        if family is None:
            family = built[spec.name] = _empty(spec)
        if spec.kind == HISTOGRAM:
            *buckets, total = raw
            cumulative, running = [], 0
            for bound, count in zip((*map(floatToGoString, spec.buckets), "+Inf"), buckets, strict=True):
                running += count
                cumulative.append((bound, running))
            family.add_metric(labels, cumulative, total / 1e9)
        else:
            family.add_metric(labels, raw)
    yield from built.values()


def _empty(spec: Spec) -> Metric:
    kind = {COUNTER: CounterMetricFamily, GAUGE: GaugeMetricFamily, HISTOGRAM: HistogramMetricFamily}[spec.kind]
    return kind(spec.name, spec.documentation, labels=spec.labelnames)


class TallyCollector:
    """Exports one process's tally (prometheus_client's Collector protocol), read at scrape time, lock-free."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def describe(self) -> Iterator[Metric]:
        return families(self.tally.specs, ())

    def collect(self) -> Iterator[Metric]:
        return families(self.tally.specs[:], self.tally.rows())


class WorkersCollector:
    """The supervisor's view of every worker's tally file in `directory`, added up at scrape time.

    Counters and histograms are summed over all workers, dead ones included, so a restart never makes a
    counter go down: a dead worker's numbers are folded into `retired` and its files removed. Gauges are
    combined over the live workers only, by their mode (sum, max, min); a dead worker's gauges mean nothing.
    """

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self.lock = threading.Lock()  # concurrent scrapes fold a dead worker once (the supervisor's thread)
        self.specs: dict[str, Spec] = {}
        self.retired: dict[tuple[str, tuple[str, ...]], object] = {}

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            total = dict(self.retired)
            gauges: dict[tuple[str, tuple[str, ...]], list[float]] = {}
            for layout in sorted(self.directory.glob("tally-*.layout")):
                counts = layout.with_suffix(".counts")
                try:
                    alive, rows = read_worker(layout, counts, self.specs)
                except FileNotFoundError:  # a worker between creating its two files
                    continue
                for spec, labels, raw in rows:
                    key = (spec.name, labels)
                    if spec.kind == GAUGE:
                        if alive:
                            gauges.setdefault(key, []).append(raw)
                        continue
                    total[key] = _add(total.get(key), raw)
                    if not alive:
                        self.retired[key] = _add(self.retired.get(key), raw)
                if not alive:
                    counts.unlink(missing_ok=True)
                    layout.unlink(missing_ok=True)
            rows = [(self.specs[n], labels, raw) for (n, labels), raw in total.items()]
            rows += [(self.specs[n], labels, _combine(self.specs[n].mode, v)) for (n, labels), v in gauges.items()]
            return families(self.specs.values(), rows)


def read_worker(layout: Path, counts: Path, specs: dict[str, Spec]) -> tuple[bool, list]:
    """Whether the worker still runs (holds its lock), and its rows; specs learns the families it declares."""
    with open(counts, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            alive = False
        except BlockingIOError:
            alive = True
        series = []
        for line in layout.read_text().splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # being written: the next scrape sees it
            item = json.loads(line)
            if isinstance(item, dict):
                fields = {k: tuple(v) if isinstance(v, list) else v for k, v in item["family"].items()}
                specs.setdefault(fields["name"], Spec(**fields))
            else:
                name, labels, slot = item
                series.append((specs[name], tuple(labels), slot))
        end = max((slot + spec.width for spec, _, slot in series), default=0)
        data = memoryview(f.read(8 * end))
    counts_view, values_view = data.cast("q"), data.cast("d")
    return alive, [(spec, labels, _raw(spec, counts_view, values_view, slot)) for spec, labels, slot in series]


def _combine(mode: str, values: list[float]) -> float:
    """One gauge over the live workers; NaN (not known yet, e.g. upstream_up) only if no worker knows."""
    known = [v for v in values if not math.isnan(v)]
    return {"sum": sum, "max": max, "min": min}[mode](known) if known else math.nan


def _add(a: object, b: object) -> object:
    if a is None:
        return b
    if isinstance(a, list):
        return [x + y for x, y in zip(a, b, strict=True)]
    return a + b
