"""A real Postfix smtpd asks the guard's policy service at RCPT time: the mail client reads the suggestion.

Postfix (tests/integration/test_postfix.py's private instance) gets an smtpd on 127.0.0.1:2525 with
``check_policy_service inet:127.0.0.1:10040`` in the network namespace the test creates; an smtplib client
submits as a mail client would. army.ml is refused at RCPT with "Did you mean <user@army.mil>?", army.mil is
accepted and stays queued (defer_transports = smtp), nothing for army.ml is queued, the event names the sender.
"""

from __future__ import annotations

import json
import smtplib
import subprocess

import fakes
import pytest
from mailnet import GUARD_DNS, MailNet, poll, unfolded
from test_postfix import Postfix

pytestmark = pytest.mark.realprog
SUGGESTION = "Did you mean <user@army.mil>?"
SMTPD = f"{GUARD_DNS}:2525"
POLICY = f"{GUARD_DNS}:10040"


def start_policy_guard(net, tmp_path, monkeypatch, mode: str = "reject"):
    """The guard inside net's namespace with the policy service on POLICY; (guard, its events file)."""
    config = tmp_path / "guard.toml"
    config.write_text(f"""
listen = ["{GUARD_DNS}:53"]
upstreams = ["{GUARD_DNS}:{net.dns.port}"]
protect = ["army.mil"]
[policy]
listen = ["{POLICY}"]
mode = "{mode}"
""")
    events = tmp_path / "events.jsonl"
    monkeypatch.setattr(fakes, "GUARD_CMD", [*net.exec_prefix(), *fakes.GUARD_CMD])
    guard = fakes.Guard(["-c", str(config), "--zones", str(tmp_path), "--events", str(events)], cwd=tmp_path)
    return guard, events


@pytest.fixture
def mailnet():
    net = MailNet("rgps")
    yield net
    net.close()


def with_policy_smtpd(postfix: Postfix) -> None:
    """The submission-side smtpd, with the two main.cf lines the README shows, then `postfix reload`."""
    with open(postfix.etc / "master.cf", "a") as fh:
        fh.write(f"{SMTPD} inet n - n - - smtpd\n")
    postconf = postfix.postfix.replace("postfix", "postconf")
    postfix.run(
        postconf,
        "-c",
        str(postfix.etc),
        "-e",
        f"smtpd_recipient_restrictions = check_policy_service inet:{POLICY}, permit_mynetworks, "
        "reject_unauth_destination",
        "smtpd_policy_service_default_action = 451 4.3.5 typo guard unavailable, try again later",
        "defer_transports = smtp",
    )
    postfix.run(postfix.postfix, "-c", str(postfix.etc), "reload")


def submit(net: MailNet, sender: str, recipients: list[str]) -> dict[str, tuple[int, str]]:
    return submit_to(net, SMTPD, sender, recipients)


def submit_to(net: MailNet, server: str, sender: str, recipients: list[str]) -> dict[str, tuple[int, str]]:
    """One SMTP session from inside the namespace: the RCPT reply per recipient, then DATA if any was accepted."""
    replies: dict[str, tuple[int, str]] = {}
    with net.inside():
        client = poll(lambda: _connect(server), "the MTA's SMTP listener on " + server, 30)
        try:
            client.ehlo("client.test")
            client.mail(sender)
            for rcpt in recipients:
                code, text = client.rcpt(rcpt)
                replies[rcpt] = (code, text.decode(errors="replace"))
            if any(code == 250 for code, _ in replies.values()):
                code, _ = client.data(f"From: {sender}\r\nSubject: test\r\n\r\nhello\r\n")
                replies["DATA"] = (code, "")
        finally:
            client.quit()
    return replies


def _connect(server: str) -> smtplib.SMTP | None:
    host, port = server.split(":")
    try:
        return smtplib.SMTP(host, int(port), timeout=30)
    except OSError:
        return None


def test_real_postfix_refuses_army_ml_at_rcpt_with_the_suggestion(mailnet, tmp_path, monkeypatch):
    guard, events = start_policy_guard(mailnet, tmp_path, monkeypatch)
    postfix = None
    try:
        assert f"policy service listening address={GUARD_DNS} port=10040" in guard.output()
        postfix = Postfix(mailnet)
        with_policy_smtpd(postfix)

        replies = submit(mailnet, "alice@mta.test", ["user@army.ml", "user@army.mil"])
        code, text = replies["user@army.ml"]
        assert code == 550 and text.startswith("5.1.2 "), replies
        assert SUGGESTION in unfolded(text) and "Recipient address rejected" in text, text
        assert replies["user@army.mil"][0] == 250 and replies["DATA"][0] == 250, replies

        queue = poll(lambda: "user@army.mil" in (q := postfix.queue()) and q, "army.mil in postqueue -p")
        assert "army.ml\n" not in queue and "user@army.ml " not in queue and "<user@army.ml>" not in queue, queue
        lines = [json.loads(x) for x in poll(lambda: events.exists() and events.read_text(), "the event").splitlines()]
        refusal = next(e for e in lines if e.get("event") == "submission_refusal")
        assert refusal["sender"] == "alice@mta.test" and refusal["recipient"] == "user@army.ml"
        assert refusal["suggestion"] == "user@army.mil" and refusal["protected"] == "army.mil"
        assert refusal["client_address"] == "127.0.0.1" and "sasl_username" in refusal

        # an exception for army.ml (domain-wide) lets the next submission through, with an audit event
        subprocess.run(
            [*fakes.GUARD_CMD[len(mailnet.exec_prefix()) :], "exceptions", "add", "army.ml", "--zones", str(tmp_path)]
            + ["--owner", "it-desk", "--reason", "contract with Mali", "--until", "2099-01-01"],
            check=True,
            capture_output=True,
        )
        poll(lambda: "override_rules=2" in guard.output(), "the guard reading exceptions.toml (2 passthru rules)")
        replies = submit(mailnet, "alice@mta.test", ["user@army.ml"])
        assert replies["user@army.ml"][0] == 250, replies
    except BaseException:
        print("postfix maillog:\n" + (postfix.log() if postfix else ""))
        print("guard output:\n" + guard.output())
        raise
    finally:
        if postfix is not None:
            postfix.stop()
        guard.stop()
