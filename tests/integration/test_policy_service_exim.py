"""A real Exim daemon asks the guard's policy service from its RCPT ACL (${readsocket}), as the README shows.

Exim (from /opt/resolverguard-exim, as tests/integration/test_exim.py runs it) listens on 127.0.0.1:2526 in
the test's network namespace with queue_only; an smtplib client submits. army.ml is refused at RCPT with the
suggestion, army.mil is accepted and queued (exim -bp), nothing for army.ml is queued, the event names the sender.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
from mailnet import GUARD_DNS, MailNet, poll, unfolded
from test_exim import EXIM_ROOT, Exim
from test_policy_service_postfix import POLICY, SUGGESTION, start_policy_guard, submit_to

pytestmark = pytest.mark.realprog
PORT = 2526

# The ACL of the README ("Exim"), with the guard at POLICY.
RCPT_ACL = r"""
acl_check_rcpt:
  warn    set acl_m_guard = ${readsocket{inet:%(policy)s}\
            {request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=SMTP\n\
sender=$sender_address\nrecipient=$local_part@$domain\nclient_address=$sender_host_address\n\
sasl_username=$authenticated_id\n\n}{5s}{}{action=DUNNO}}
  deny    condition = ${if match{$acl_m_guard}{\N^action=5\d\d \N}}
          message = ${sg{$acl_m_guard}{\N^action=\d\d\d \N}{}}
  defer   condition = ${if match{$acl_m_guard}{\N^action=4\d\d \N}}
          message = ${sg{$acl_m_guard}{\N^action=\d\d\d \N}{}}
  accept  hosts = 127.0.0.0/8
  deny    message = relay not permitted
"""


class EximDaemon(Exim):
    """test_exim's private Exim, as an SMTP daemon with the policy ACL that only queues what it accepts."""

    def __init__(self, net: MailNet) -> None:
        super().__init__(net)
        self.pidfile = self.spool / "exim.pid"
        self.config.write_text(f"""\
exim_path = {self.exim}
spool_directory = {self.spool}
log_file_path = {self.spool}/%slog
primary_hostname = mta.test
qualify_domain = mta.test
domainlist local_domains = mta.test
local_interfaces = {GUARD_DNS}
daemon_smtp_ports = {PORT}
queue_only = true
host_lookup = !*
rfc1413_hosts =
keep_environment =
acl_smtp_rcpt = acl_check_rcpt
begin acl
{RCPT_ACL % {"policy": POLICY}}
begin routers
dnslookup:
  driver = dnslookup
  domains = ! +local_domains
  transport = remote_smtp
  no_more
begin transports
remote_smtp:
  driver = smtp
""")
        self.run("-bd", "-oP", str(self.pidfile))
        poll(self.pidfile.exists, "the Exim daemon's pid file", 30)

    def stop(self) -> None:
        try:
            os.kill(int(self.pidfile.read_text().split()[0]), signal.SIGTERM)
        except (OSError, ValueError):
            pass


@pytest.fixture
def net(monkeypatch):
    monkeypatch.setenv("PATH", f"{os.environ.get('PATH', '')}:{EXIM_ROOT}/usr/sbin")
    mailnet = MailNet("rgpx")
    yield mailnet
    mailnet.close()


def test_real_exim_acl_refuses_army_ml_at_rcpt_with_the_suggestion(net, tmp_path, monkeypatch):
    guard, events = start_policy_guard(net, tmp_path, monkeypatch)
    exim = None
    try:
        assert "policy service listening" in guard.output()
        exim = EximDaemon(net)
        replies = submit_to(net, f"{GUARD_DNS}:{PORT}", "alice@mta.test", ["user@army.ml", "user@army.mil"])
        code, text = replies["user@army.ml"]
        assert code == 550 and text.startswith("5.1.2 ") and SUGGESTION in unfolded(text), replies
        assert replies["user@army.mil"][0] == 250 and replies["DATA"][0] == 250, replies

        queue = exim.run("-bp")
        assert "user@army.mil" in queue and "army.ml\n" not in queue and "user@army.ml " not in queue, queue
        lines = [json.loads(x) for x in poll(lambda: events.exists() and events.read_text(), "the event").splitlines()]
        refusal = next(e for e in lines if e.get("event") == "submission_refusal")
        assert refusal["sender"] == "alice@mta.test" and refusal["recipient"] == "user@army.ml"
        assert refusal["client_address"] == "127.0.0.1"
    except BaseException:
        print("exim mainlog:\n" + (exim.log() if exim else ""))
        print("guard output:\n" + guard.output())
        raise
    finally:
        if exim is not None:
            exim.stop()
        guard.stop()
