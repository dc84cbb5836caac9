"""Shared fixtures: a fresh metrics registry, a stub upstream and a resolverguard process on loopback."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Hermetic: no guard a test starts (in this process or a child) reads the host's /etc/resolverguard/guard.toml
os.environ["RESOLVERGUARD_CONFIG"] = ""

from fakes import FakeUpstream, Guard  # noqa: E402


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def upstream():
    up = FakeUpstream()
    yield up
    up.close()


@pytest.fixture
def start_guard(tmp_path):
    """start_guard(*args, zones=None) -> Guard; every guard is stopped (by PID) at the end of the test."""
    guards: list[Guard] = []

    def start(*args: str, zones: Path | None = None, env: dict | None = None) -> Guard:
        zdir = zones if zones is not None else tmp_path / "zones"
        zdir.mkdir(exist_ok=True)
        argv = ["--zones", str(zdir), "--events", str(tmp_path / "events.jsonl"), "--allow-empty", *args]
        if not any(a.startswith("--listen") or a == "-l" for a in args):
            argv += ["--listen", "127.0.0.1:0"]
        g = Guard(argv, cwd=tmp_path, env=env)
        guards.append(g)
        return g

    yield start
    for g in guards:
        g.stop()
