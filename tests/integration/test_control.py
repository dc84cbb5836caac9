"""`resolverguard status` and `reload` over the control socket: --workers 2, a refused and a good reload,
exit codes 0 / 1 / 2, and a user other than root or the guard's refused by the socket's permissions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from fakes import GUARD_CMD
from polling import wait_until


def guard_toml(tmp_path: Path, upstream: str, socket_dir: Path) -> Path:
    path = tmp_path / "guard.toml"
    path.write_text(
        f'listen = ["127.0.0.1:0"]\nupstreams = ["{upstream}"]\n[control]\nsocket = "{socket_dir / "ctl.sock"}"\n'
    )
    return path


def cli(*args: str, user: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(user or []), *GUARD_CMD, *args], capture_output=True, text=True, timeout=60)


def statuses(config: Path) -> dict:
    done = cli("status", "--config", str(config), "--json")
    return json.loads(done.stdout) if done.stdout.startswith("{") else {}


def test_status_and_reload_with_two_workers(tmp_path, upstream, start_guard):
    (tmp_path / "zones").mkdir()
    protect = tmp_path / "zones" / "a.protect"
    protect.write_text("army.mil\n")
    config = guard_toml(tmp_path, upstream.address, tmp_path)
    assert cli("status", "--config", str(config)).returncode == 2  # not running: unreachable
    start_guard("-c", str(config), "--workers", "2")
    both = wait_until(lambda: len(statuses(config)) == 2 and statuses(config), "both workers answer status")
    assert sorted(s["worker"] for s in both.values()) == [0, 1]
    assert len({s["pid"] for s in both.values()}) == 2
    for s in both.values():
        assert s["policy"]["protected"] == 1 and s["upstreams"][0]["name"] == upstream.address
        assert s["export"] is not None and "serial" in s["export"]
    done = cli("status", "--config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "worker 0" in done.stdout and "worker 1" in done.stdout

    protect.write_text("army.mil\nnavy.mil\n")
    done = cli("reload", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert all(s["policy"]["protected"] == 2 for s in statuses(config).values())  # reload waited for its result

    protect.write_text("army.mil\nnot..a.name\n")
    done = cli("reload", "--config", str(config))
    assert done.returncode == 1 and "reload refused" in done.stderr and "a.protect:2" in done.stderr, done.stderr
    assert done.stderr.count("reload refused") == 1, done.stderr  # once, not once per worker
    after = statuses(config)
    assert all(s["policy"]["protected"] == 2 for s in after.values())  # the last good policy stays
    assert all(s["policy"]["last_reload"]["ok"] is False for s in after.values())
    done = cli("status", "--config", str(config))
    assert done.returncode == 1 and "DEGRADED: last reload failed" in done.stdout, done.stdout

    protect.write_text("army.mil\n")
    assert cli("reload", "--config", str(config)).returncode == 0
    assert cli("status", "--config", str(config)).returncode == 0


def test_status_is_degraded_when_every_upstream_is_down(tmp_path, start_guard):
    import dns.message
    import dns.query

    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "a.protect").write_text("army.mil\n")
    config = guard_toml(tmp_path, "127.0.0.1:9", tmp_path)  # nothing listens on the discard port
    guard = start_guard("-c", str(config))

    def degraded() -> bool:
        try:
            dns.query.udp(dns.message.make_query("example.org", "A"), guard.host, port=guard.port, timeout=5)
        except Exception:
            pass
        return cli("status", "--config", str(config)).returncode == 1

    wait_until(degraded, "status exit 1 once the only upstream is down")
    assert "every upstream is down" in cli("status", "--config", str(config)).stdout


def test_a_user_other_than_root_or_the_guards_is_refused(tmp_path, upstream, start_guard):
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or not setpriv:
        pytest.skip("running a client as nobody needs root and setpriv")
    nobody = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    if subprocess.run([*nobody, *GUARD_CMD, "--version"], capture_output=True).returncode != 0:
        pytest.skip("nobody cannot run this interpreter")
    top = Path(tempfile.mkdtemp(prefix="rg-control-"))  # pytest's tmp_path is under a 0700 directory
    try:
        top.chmod(0o755)  # nobody can reach the config and the socket file: only the socket's own mode keeps it out
        (top / "zones").mkdir()
        (top / "zones" / "a.protect").write_text("army.mil\n")
        config = guard_toml(top, upstream.address, top)
        config.chmod(0o644)
        guard = start_guard("-c", str(config))
        wait_until(lambda: statuses(config), "the guard answers root")
        refused(config, nobody)
        guard.stop()
    finally:
        shutil.rmtree(top)


def refused(config: Path, nobody: list[str]) -> None:
    sockets = config.parent
    sock = sockets / "ctl.sock"
    assert (sock.stat().st_mode & 0o777) == 0o600 and sock.stat().st_uid == os.geteuid()
    for command in ("status", "reload"):
        done = cli(command, "--config", str(config), user=nobody)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "permission denied" in done.stdout + done.stderr
