"""reload: a new policy replaces the old in one assignment, or not at all (the last good one stays)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from prometheus_client import CollectorRegistry

from resolverguard.config import Config
from resolverguard.metrics import Metrics
from resolverguard.reload import PolicyHolder


def test_a_reload_that_needs_more_tally_slots_than_are_left_is_refused_and_the_last_good_policy_stays(tmp_path):
    zones = tmp_path / "zones"
    zones.mkdir()
    cfg = Config(protect=("army.mil",), zones_dir=str(zones))
    metrics = Metrics(CollectorRegistry())
    current = [cfg]
    holder = PolicyHolder(cfg, metrics, lambda: current[0])
    good = holder.current()
    tally = metrics.tally
    tally.counts = tally.counts[: tally.used + 50]  # the store is nearly full: 50 slots left
    current[0] = replace(cfg, protect=tuple(f"brand{i}.com" for i in range(20)))  # about 60 series each

    assert asyncio.run(holder.reload()) is False
    assert holder.current() is good and holder.cfg is cfg
    assert metrics.registry.get_sample_value("resolverguard_policy_reloads_total", {"result": "failure"}) == 1
