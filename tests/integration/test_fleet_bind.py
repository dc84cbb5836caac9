"""BIND 9 as an RPZ secondary of the running guard: TSIG, NOTIFY, IXFR, and --check-secondary."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import secondaries  # noqa: E402
from realprog import require_program  # noqa: E402


@pytest.fixture
def named() -> str:
    return require_program("named")


def test_bind_secondary_follows_the_guard(tmp_path, upstream, start_guard, named) -> None:
    def start(directory: Path, port: int, guard_port: int) -> secondaries.Daemon:
        return secondaries.start_bind(named, directory, port, guard_port)

    figures = secondaries.fleet_scenario(tmp_path, upstream.address, start_guard, start, check_secondary=True)
    assert figures["change_seconds"] < 5
