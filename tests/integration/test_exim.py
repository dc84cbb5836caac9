"""A real Exim whose only resolver is the guard: `exim -bt` routes army.ml to the sink, a real send bounces.

Debian's exim4-daemon-light conflicts with postfix (both are the mail-transport-agent), so .ci/run extracts
the Exim packages into EXIM_ROOT without installing them as the MTA. Exim runs here with a private
configuration (-C), spool and log in a temporary directory, inside the test's network namespace; it runs no
daemon and listens nowhere.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

import fakes
import pytest
from mailnet import SINK, MailNet, guard_config, poll, unfolded
from realprog import require_program

pytestmark = pytest.mark.realprog
EXIM_ROOT = "/opt/resolverguard-exim"  # where .ci/run extracts exim4-daemon-light, exim4-base, exim4-config
SUGGESTION = "Did you mean <user@army.mil>?"


class Exim:
    def __init__(self, net: MailNet) -> None:
        self.exim = require_program("exim4")
        self.net, root = net, net.dir / "exim"
        self.spool, self.mail = root / "spool", root / "mail"
        for d in (self.spool, self.mail):
            d.mkdir(parents=True)
        root.chmod(0o755)
        self.mail.chmod(0o1777)
        subprocess.run(["chown", "-R", "Debian-exim:", str(self.spool)], check=True)
        self.config = root / "exim.conf"
        self.config.write_text(f"""\
exim_path = {self.exim}
spool_directory = {self.spool}
log_file_path = {self.spool}/%slog
primary_hostname = mta.test
qualify_domain = mta.test
domainlist local_domains = mta.test
local_interfaces = 127.0.0.1
keep_environment =
begin routers
dnslookup:
  driver = dnslookup
  domains = ! +local_domains
  transport = remote_smtp
  no_more
local:
  driver = accept
  transport = local_file
begin transports
remote_smtp:
  driver = smtp
local_file:
  driver = appendfile
  file = {self.mail}/root
  user = Debian-exim
begin retry
* * F,1h,10m
""")

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        done = subprocess.run(
            [*self.net.exec_prefix(), self.exim, "-C", str(self.config), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check:
            assert done.returncode == 0, f"exim {args}: {done.stdout}{done.stderr}"
        return done.stdout + done.stderr

    def send(self, recipient: str) -> None:
        message = f"From: root@mta.test\nTo: {recipient}\nSubject: test\n\nhello\n"
        self.run("-odi", "-f", "root@mta.test", recipient, stdin=message, check=False)  # a 5xx/4xx is no failure

    def log(self) -> str:
        path = self.spool / "mainlog"
        return path.read_text(errors="replace") if path.exists() else ""

    def mailbox(self) -> str:
        box = self.mail / "root"
        return box.read_text(errors="replace") if box.exists() else ""


def gone(net: MailNet) -> list[str]:
    """What of net is still there (should be nothing once closed): its namespace, /etc/netns entry, temp dir."""
    paths = [Path("/run/netns") / net.name, net.etc, net.dir]
    return [str(p) for p in paths if p.exists()]


@contextlib.contextmanager
def exim_net():
    """An Exim in its own MailNet; the net is closed (and checked gone) also when Exim() skips for want of exim."""
    net = MailNet("rgex")
    try:
        yield Exim(net)  # skips (or fails under CI) when exim is missing
    finally:
        net.close()
        assert not gone(net), f"left behind: {gone(net)}"


@pytest.fixture
def exim(monkeypatch):
    monkeypatch.setenv("PATH", f"{os.environ.get('PATH', '')}:{EXIM_ROOT}/usr/sbin")
    with exim_net() as e:
        yield e


def test_a_skip_for_missing_exim_leaves_nothing_behind(monkeypatch):
    import test_exim

    def missing(name: str) -> str:
        pytest.skip(f"{name} not installed")

    monkeypatch.setattr(test_exim, "require_program", missing)
    seen: list[MailNet] = []
    real = test_exim.MailNet
    monkeypatch.setattr(test_exim, "MailNet", lambda prefix: seen.append(real(prefix)) or seen[-1])
    with pytest.raises(pytest.skip.Exception), exim_net():
        pass
    assert seen and not gone(seen[0])


def test_real_exim_routes_army_ml_to_the_sink_and_gets_the_suggestion(exim, tmp_path, monkeypatch):
    net = exim.net
    config = tmp_path / "guard.toml"
    guard_config(config, net.dns.port, "reject")
    monkeypatch.setattr(fakes, "GUARD_CMD", [*net.exec_prefix(), *fakes.GUARD_CMD])
    guard = fakes.Guard(
        ["-c", str(config), "--zones", str(tmp_path), "--events", str(tmp_path / "events.jsonl")], cwd=tmp_path
    )
    try:
        routed = exim.run("-bt", "user@army.ml")
        assert re.search(rf"host sink\.resolverguard\.internal\s+\[{re.escape(SINK)}\]", routed), routed
        assert "host mx.army.mil [127.0.0.3]" in exim.run("-bt", "user@army.mil")

        exim.send("user@army.mil")
        poll(lambda: net.recorder.messages, "delivery to the army.mil stand-in MX")
        exim.send("user@army.ml")
        bounce = poll(lambda: "army.ml" in exim.mailbox() and exim.mailbox(), "the bounce to root@mta.test")
        assert SUGGESTION in unfolded(bounce), bounce
        assert "550 5.1.2" in bounce
        assert len(net.recorder.messages) == 1

        guard_config(config, net.dns.port, "defer")
        guard.proc.send_signal(signal.SIGHUP)
        poll(lambda: "generation=1" in guard.output(), "the guard's reload")
        exim.send("user@army.ml")
        queued = exim.run("-bp")
        ids = re.findall(r"\b([0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4})\b", queued)
        assert ids and "user@army.ml" in queued, queued
        msglog = exim.run("-Mvl", ids[-1])
        assert "450 4.1.2" in msglog and SUGGESTION in unfolded(msglog), msglog
    except BaseException:
        print("exim mainlog:\n" + exim.log())
        raise
    finally:
        guard.stop()
