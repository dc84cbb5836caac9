"""Operations: the shipped unit starts as written, bad set-ups fail closed and loud, events survive logrotate."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fakes import GUARD_CMD, ROOT
from realprog import require_program

UNIT = ROOT / "docs" / "resolverguard.service"


def unit_exec_start() -> list[str]:
    """The ExecStart= command line of the shipped unit, split as systemd splits it (shell-like quoting)."""
    line = next(x for x in UNIT.read_text().splitlines() if x.startswith("ExecStart="))
    return shlex.split(line.partition("=")[2])


def etc_tree(top: Path, guard_toml: str) -> Path:
    """A copy of the README's /etc/resolverguard: guard.toml and the shipped zones."""
    etc = top / "etc"
    shutil.copytree(ROOT / "zones", etc / "zones")
    (etc / "guard.toml").write_text(guard_toml)
    return etc


def mapped_exec_start(top: Path, port: int) -> list[str]:
    """The unit's exact arguments, with /etc/resolverguard, /var/log/resolverguard and port 53 moved into top."""
    argv = unit_exec_start()
    assert argv[0] == "/opt/resolverguard/bin/resolverguard", argv
    out = []
    for arg in argv[1:]:
        arg = arg.replace("/etc/resolverguard", str(top / "etc")).replace("/var/log/resolverguard", str(top / "log"))
        out.append(re.sub(r":53$", f":{port}", arg))
    return [*GUARD_CMD, *out]


class Process:
    """A command whose output is collected by a thread; stopped by PID."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in list(self.lines)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.reader.join(2)
                raise AssertionError(f"no {text!r} in the output:\n" + "".join(self.lines))
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(2)
        return self.proc.returncode


QUERY_BOTH = """
import json, sys, dns.message, dns.query, dns.rcode
port = int(sys.argv[1])
out = {}
for host in ("127.0.0.1", "::1"):
    for fn in (dns.query.udp, dns.query.tcp):
        r = fn(dns.message.make_query("army.ml", "MX", use_edns=0), host, port=port, timeout=5)
        out[f"{host} {fn.__name__}"] = dns.rcode.to_text(r.rcode())
print(json.dumps(out))
"""


def test_the_units_exact_exec_start_serves_ipv4_and_ipv6_on_one_port(tmp_path):
    """0.0.0.0:PORT and [::]:PORT together (IPV6_V6ONLY), in a network namespace of the test's own."""
    unshare, nsenter = require_program("unshare"), require_program("nsenter")
    if os.geteuid() != 0:
        pytest.skip("a network namespace needs root")
    etc_tree(tmp_path, 'upstreams = ["127.0.0.1:9"]\n')
    (tmp_path / "log").mkdir()
    port = 5353
    argv = mapped_exec_start(tmp_path, port)
    assert f"0.0.0.0:{port}" in argv and f"[::]:{port}" in argv, argv
    script = 'ip link set lo up && exec "$@"'
    guard = Process([unshare, "--net", "sh", "-c", script, "sh", *argv], cwd=tmp_path)
    try:
        guard.wait_for("started version")
        assert "listening address=0.0.0.0" in guard_output(guard) and "listening address=::" in guard_output(guard)
        done = subprocess.run([nsenter, f"--net=/proc/{guard.proc.pid}/ns/net", sys.executable, "-c", QUERY_BOTH,
                               str(port)], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert set(json.loads(done.stdout).values()) == {"NXDOMAIN"}, done.stdout
    finally:
        assert guard.stop() == 0, guard_output(guard)


def guard_output(p: Process) -> str:
    return "".join(p.lines)
