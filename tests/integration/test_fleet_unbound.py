"""Unbound as an RPZ secondary of the running guard (rpz: primary:): NOTIFY, IXFR of a one-rule change.

Unbound 1.17 (Debian 12) has no TSIG for zone transfers (``tsig-key:`` is an unknown keyword), so the
guard here protects the export by its address ACL only; the TSIG checks are in the BIND and PowerDNS tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import secondaries  # noqa: E402
import unbound_helper  # noqa: E402
from realprog import require_program  # noqa: E402


@pytest.fixture
def unbound() -> str:
    return require_program("unbound")


def test_unbound_secondary_follows_the_guard(tmp_path, upstream, start_guard, unbound) -> None:
    def start(directory: Path, port: int, guard_port: int) -> secondaries.Daemon:
        server = unbound_helper.start_unbound(directory, rpz_primary=f"127.0.0.1@{guard_port}", port=port)
        return secondaries.Daemon(server.proc, port, directory, server.log)

    figures = secondaries.fleet_scenario(tmp_path, upstream.address, start_guard, start, tsig=False)
    assert figures["change_seconds"] < 5
