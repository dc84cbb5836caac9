"""Least privilege: the shipped systemd unit, and the guard really running as nobody with CAP_NET_BIND_SERVICE only."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realprog import require_program  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "docs" / "resolverguard.service"
CAP_NET_BIND_SERVICE = 1 << 10


def unit_options(text: str) -> dict[str, list[str]]:
    """'Section.Key' -> every value given (systemd allows repeats, e.g. SystemCallFilter=)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m[1]
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def test_unit_file_sandboxes_the_service():
    o = unit_options(UNIT.read_text())
    one = {k: v[-1] for k, v in o.items()}
    assert one.get("Service.DynamicUser") == "yes" or one.get("Service.User") not in (None, "", "root", "0")
    assert one["Service.AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert one["Service.CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices"):
        assert one[f"Service.{key}"] == "yes", key
    assert one["Service.ProtectSystem"] == "strict"
    assert set(one["Service.RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in o["Service.SystemCallFilter"]
    assert one["Service.ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert re.search(r"--listen \S*:53\b", one["Service.ExecStart"])
    assert one["Install.WantedBy"] == "multi-user.target"


def test_unit_file_passes_systemd_analyze(tmp_path):
    analyze = require_program("systemd-analyze")
    # verify checks that ExecStart exists: point it at this interpreter for the check
    unit = tmp_path / "resolverguard.service"
    unit.write_text(
        UNIT.read_text().replace("/opt/resolverguard/bin/resolverguard", f"{sys.executable} -m resolverguard")
    )
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    sec = subprocess.run([analyze, "security", "--offline=true", str(unit)], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", sec.stdout + sec.stderr)
    assert m, sec.stdout + sec.stderr
    assert float(m[1]) <= 2.5, sec.stdout  # systemd rates 0-10; below 2 is "OK", 10 "UNSAFE"


def low_port() -> int:
    for port in range(853, 1024):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
                return port
        except OSError:
            continue
    pytest.skip("no free port below 1024 on 127.0.0.1")


def test_runs_as_nobody_with_only_net_bind_service_on_a_low_port():
    """As the unit does it: uid nobody, the one capability, no new privileges; serving on a port below 1024."""
    setpriv, unshare = require_program("setpriv"), require_program("unshare")
    if os.geteuid() != 0:
        pytest.skip("dropping to nobody needs root")
    # nobody may not be able to reach this interpreter (e.g. under /root): in a private mount namespace,
    # bind its prefix onto a world-readable directory and load its libpython from there.
    top = Path(tempfile.mkdtemp(prefix="rg-priv-"))
    try:
        top.chmod(0o755)
        (top / "py").mkdir()
        zones = top / "zones"
        zones.mkdir(mode=0o755)
        python = top / "py" / Path(sys.executable).relative_to(sys.prefix)
        port = low_port()
        drop = [
            setpriv,
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--no-new-privs",
            "--inh-caps=-all,+net_bind_service",
            "--ambient-caps=-all,+net_bind_service",
            "--bounding-set=-all,+net_bind_service",
        ]
        serve = [
            str(python),
            "-m",
            "resolverguard",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            "127.0.0.1:9",
            "--zones",
            str(zones),
            "--protect",
            "army.mil",
            "--events",
            "",
        ]
        script = f'mount --bind "{sys.prefix}" "{top / "py"}" && exec "$@"'
        env = {**os.environ, "LD_LIBRARY_PATH": str(top / "py" / "lib"), "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [unshare, "--mount", "sh", "-c", script, "sh", *drop, *serve],
            env=env,
            cwd=top,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            lines = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                lines.append(line)
                if "started version" in line or not line:
                    break
            if proc.poll() is not None and any("unshare" in x or "mount" in x for x in lines):
                pytest.skip("no mount namespace here: " + "".join(lines)[-300:])
            assert "started version" in lines[-1], "".join(lines)
            status = dict(
                line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if ":" in line
            )
            assert status["Uid"].split() == ["65534"] * 4  # real, effective, saved, filesystem: nobody
            assert int(status["CapEff"], 16) == CAP_NET_BIND_SERVICE
            assert int(status["CapBnd"], 16) == CAP_NET_BIND_SERVICE  # and no way to get more
            assert status["NoNewPrivs"].strip() == "1"
            q = dns.message.make_query("army.ml", "A")
            assert dns.query.udp(q, "127.0.0.1", port=port, timeout=5).rcode() == dns.rcode.NXDOMAIN
            assert dns.query.tcp(q, "127.0.0.1", port=port, timeout=5).rcode() == dns.rcode.NXDOMAIN
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                assert proc.wait(10) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    finally:
        shutil.rmtree(top, ignore_errors=True)
