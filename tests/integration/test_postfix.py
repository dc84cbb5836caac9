"""A real Postfix whose only resolver is the guard: army.mil is delivered, army.ml bounces with a suggestion.

Postfix runs in a network namespace the test creates, not chrooted, with its own config directory and queue
and no SMTP listener of its own. Reject mode first (the bounce reaches the local sender), then the config is
switched to defer and reloaded (the message stays queued, `postqueue -p` shows the reason).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import fakes
import pytest
from mailnet import GUARD_DNS, SINK, MailNet, guard_config, poll, unfolded
from realprog import require_program

pytestmark = pytest.mark.realprog
SUGGESTION = "Did you mean <user@army.mil>?"

MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""  # no "smtp inet" line: this Postfix listens on no port 25 of its own; "n" in the chroot column throughout


class Postfix:
    """One private Postfix instance: config in root/etc, queue in root/queue, mailboxes in root/spool."""

    def __init__(self, net: MailNet) -> None:
        self.postfix = require_program("postfix")
        self.sendmail = require_program("sendmail")
        self.postqueue = require_program("postqueue")
        self.net, root = net, net.dir / "postfix"
        self.etc, self.spool = root / "etc", root / "spool"
        for d in (self.etc, root / "queue", root / "data", self.spool):
            d.mkdir(parents=True)
        root.chmod(0o755)
        shutil.chown(root / "data", "postfix")
        self.spool.chmod(0o1777)  # local(8) delivers root's mail with default_privs
        (self.etc / "master.cf").write_text(MASTER_CF)
        (self.etc / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_spool_directory = {self.spool}
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
mail_owner = postfix
setgid_group = postdrop
myhostname = mta.test
mydomain = test
myorigin = mta.test
mydestination = mta.test, localhost
inet_interfaces = {GUARD_DNS}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
relayhost =
smtp_tls_security_level = none
smtp_connect_timeout = 10s
delay_warning_time = 0
biff = no
""")
        self.env = {**os.environ, "MAIL_CONFIG": str(self.etc)}
        self.run(self.postfix, "-c", str(self.etc), "check")
        self.run(self.postfix, "-c", str(self.etc), "start")
        self.pidfile = root / "queue" / "pid" / "master.pid"
        poll(self.pidfile.exists, "the Postfix master pid file", 30)

    def run(self, *argv: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [*self.net.exec_prefix(), *argv], input=stdin, capture_output=True, text=True, env=self.env, timeout=60
        )
        assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
        return done.stdout

    def send(self, recipient: str, subject: str) -> None:
        message = f"From: root@mta.test\nTo: {recipient}\nSubject: {subject}\n\nhello\n"
        self.run(self.sendmail, "-C", str(self.etc), "-f", "root@mta.test", recipient, stdin=message)

    def mailbox(self) -> str:
        box = self.spool / "root"
        return box.read_text(errors="replace") if box.exists() else ""

    def queue(self) -> str:
        return self.run(self.postqueue, "-c", str(self.etc), "-p")

    def log(self) -> str:
        path = self.etc.parent / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        subprocess.run(
            [*self.net.exec_prefix(), self.postfix, "-c", str(self.etc), "stop"],
            env=self.env,
            capture_output=True,
            timeout=60,
        )
        if self.pidfile.exists():  # stop did not finish: the master by its PID
            try:
                os.kill(int(self.pidfile.read_text().split()[0]), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


@pytest.fixture
def mailnet():
    net = MailNet("rgpf")
    yield net
    net.close()


def test_real_postfix_delivers_army_mil_and_bounces_army_ml_with_a_suggestion(mailnet, tmp_path, monkeypatch):
    config = tmp_path / "guard.toml"
    guard_config(config, mailnet.dns.port, "reject")
    monkeypatch.setattr(fakes, "GUARD_CMD", [*mailnet.exec_prefix(), *fakes.GUARD_CMD])
    guard = fakes.Guard(
        ["-c", str(config), "--zones", str(tmp_path), "--events", str(tmp_path / "events.jsonl")], cwd=tmp_path
    )
    postfix = None
    try:
        assert "smtp sink listening address=127.0.0.2 port=25" in guard.output()
        postfix = Postfix(mailnet)

        postfix.send("user@army.mil", "to the real domain")
        poll(lambda: mailnet.recorder.messages, "delivery to the army.mil stand-in MX")
        sender, rcpts, _ = mailnet.recorder.messages[0]
        assert (sender, rcpts) == ("root@mta.test", ["user@army.mil"])

        postfix.send("user@army.ml", "to the typo")
        bounce = poll(lambda: "army.ml" in postfix.mailbox() and postfix.mailbox(), "the bounce to root@mta.test")
        assert SUGGESTION in unfolded(bounce), bounce
        assert f"[{SINK}] said: 550 5.1.2" in unfolded(bounce)
        assert len(mailnet.recorder.messages) == 1  # the typo never reached the real MX
        events = (tmp_path / "events.jsonl").read_text()
        assert '"event":"sink_rejection"' in events and '"sender":"root@mta.test"' in events

        # the same guard switched to defer mode by a reload: the message stays queued with the reason
        guard_config(config, mailnet.dns.port, "defer")
        guard.proc.send_signal(signal.SIGHUP)
        poll(lambda: "generation=1" in guard.output(), "the guard's reload")
        postfix.send("user@army.ml", "deferred")
        queued = poll(lambda: "4.1.2" in (q := postfix.queue()) and q, "the deferred message in postqueue -p")
        assert SUGGESTION in unfolded(queued), queued
        assert "user@army.ml" in queued
    finally:
        if postfix is not None:
            postfix.stop()
        guard.stop()
