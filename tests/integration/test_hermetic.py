"""Tests never depend on the host: a guard installed by the README's steps (/etc/resolverguard/guard.toml) is
ignored by every guard the test fixtures start, while a guard run as an operator runs it would read it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dns.rcode
import pytest

HOST_CONFIG = Path("/etc/resolverguard/guard.toml")


@pytest.fixture
def host_config():
    """A broken /etc/resolverguard/guard.toml for the test's duration; whatever was there is put back."""
    if os.geteuid() != 0:
        pytest.skip("needs root to write /etc/resolverguard")
    created_dir = not HOST_CONFIG.parent.exists()
    saved = HOST_CONFIG.read_bytes() if HOST_CONFIG.exists() else None
    try:
        HOST_CONFIG.parent.mkdir(parents=True, exist_ok=True)
        HOST_CONFIG.write_text("not_a_setting_of_resolverguard = 1\n", encoding="utf-8")
        yield HOST_CONFIG
    finally:
        if saved is not None:
            HOST_CONFIG.write_bytes(saved)
        else:
            HOST_CONFIG.unlink(missing_ok=True)
        if created_dir:
            shutil.rmtree(HOST_CONFIG.parent, ignore_errors=True)


def test_guards_started_by_the_fixtures_ignore_the_hosts_config(host_config, upstream, start_guard, tmp_path):
    operator_env = {k: v for k, v in os.environ.items() if k != "RESOLVERGUARD_CONFIG"}
    as_installed = subprocess.run(
        [sys.executable, "-m", "resolverguard", "lint"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=operator_env,
        timeout=60,
    )
    assert as_installed.returncode == 2 and str(host_config) in as_installed.stderr  # it would be read
    upstream.on("example.org", "A", "example.org. 300 A 192.0.2.9")
    guard = start_guard("--upstream", upstream.address)  # no --config: the fixtures' guard
    assert guard.query("example.org", "A").rcode() == dns.rcode.NOERROR
