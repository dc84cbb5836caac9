"""The EDNS compliance probes and a small differential run, resolverguard vs a real Unbound forwarding to the
same real NSD (bench/conformance.py and bench/differential.py in small): the guard fails no probe that Unbound
passes, and differs from Unbound only in the optional sections it relays from NSD."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from realprog import require_program

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import conformance  # noqa: E402
import differential  # noqa: E402

pytestmark = pytest.mark.realprog


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    require_program("nsd")
    require_program("unbound")
    require_program("taskset")
    with differential.Servers(tmp_path_factory.mktemp("conformance")) as running:
        yield running


def test_guard_fails_no_probe_that_unbound_passes(servers):
    worse = {}
    for probe in conformance.PROBES:
        guard = conformance.verdict(probe, conformance.send(probe, servers.guard.port))
        unbound = conformance.verdict(probe, conformance.send(probe, servers.unbound.port))
        if guard and not unbound:
            worse[probe.name] = guard
    assert worse == {}


def test_differential_only_intended_classes(servers):
    rng = random.Random(7)
    found = set()
    for i in range(0, differential.NAMES, 9 * 10):  # every kind of name, three of each
        for offset in range(9):
            name = f"h{i + offset}.{differential.ORIGIN}"
            for rdtype in differential.TYPES:
                for variant in differential.VARIANTS:
                    m = differential.make(name, rdtype, variant, rng)
                    g = differential.shape(m, differential.ask(m, servers.guard.port))
                    u = differential.shape(m, differential.ask(m, servers.unbound.port))
                    found |= {(c, variant) for c in differential.classify(g, u)}
    assert {c for c, _ in found} <= {"authority", "additional"}, sorted(found)
