"""PowerDNS Recursor as an RPZ secondary of the running guard (rpzPrimary with TSIG): IXFR of a change.

Recursor 4.8 (Debian 12) does not transfer an RPZ on NOTIFY (it only wipes its cache for the name),
so this secondary follows by its SOA refresh, set to 1 s here with rpzPrimary's ``refresh``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import secondaries  # noqa: E402
from realprog import require_program  # noqa: E402


@pytest.fixture
def recursor() -> str:
    return require_program("pdns_recursor")


def test_pdns_recursor_secondary_follows_the_guard(tmp_path, upstream, start_guard, recursor) -> None:
    def start(directory: Path, port: int, guard_port: int) -> secondaries.Daemon:
        return secondaries.start_pdns(recursor, directory, port, guard_port, refresh=1)

    figures = secondaries.fleet_scenario(tmp_path, upstream.address, start_guard, start, by_notify=False)
    assert figures["change_seconds"] < 5
