"""The policy delegation protocol core: parsing within limits, and the answer to a request (no sockets)."""

from __future__ import annotations

import pytest

from resolverguard import delegation as d
from resolverguard.config import Config, load_config
from resolverguard.reload import load_policy

NOW = 1_900_000_000.0


def request(**attrs: str) -> bytes:
    base = {"request": "smtpd_access_policy", "protocol_state": "RCPT", "sender": "alice@example.org"}
    base.update(attrs)
    return "".join(f"{k}={v}\n" for k, v in base.items()).encode() + b"\n"


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    zones = tmp_path_factory.mktemp("zones")
    (zones / "p.protect").write_text("army.mil\n")
    (zones / "exceptions.toml").write_text(
        '[[exception]]\nname = "gmial.com"\nowner = "it"\nreason = "r"\nuntil = 2031-01-01\n'
        'senders = ["bob@example.org"]\n'
    )
    (zones / "q.protect").write_text("gmail.com\n")
    return load_policy(load_config(None, {"zones_dir": str(zones)}))


def test_requests_split_in_any_chunks_and_keep_order():
    data = request(recipient="a@army.ml") + request(recipient="b@army.mil")
    reader, got = d.RequestReader(), []
    for i in range(len(data)):  # one octet at a time
        got += reader.feed(data[i : i + 1])
    assert [r["recipient"] for r in got] == ["a@army.ml", "b@army.mil"] and not reader.pending
    assert d.RequestReader().feed(b"request=smtpd_access_policy\r\nunknown_new_attr=1\r\n\r\n")[0]["unknown_new_attr"]


@pytest.mark.parametrize(
    "data, kind",
    [
        (b"x" * (d.MAX_LINE + 1), "line_too_long"),
        (b"a=" + b"x" * d.MAX_LINE + b"\n", "line_too_long"),
        (b"".join(b"a%d=1\n" % i for i in range(d.MAX_ATTRIBUTES + 1)), "too_many_attributes"),
        (b"recipient=a@army.mil\nrecipient=b@army.ml\n", "malformed"),  # a repeated name: ambiguous
        (b"".join(b"a%d=%s\n" % (i, b"x" * 1000) for i in range(40)), "request_too_large"),
        (b"no equals sign\n", "malformed"),
        (b"=value\n", "malformed"),
        (b"\n", "malformed"),
        (b"name=\xff\xfe\n", "malformed"),
    ],
)
def test_limits_and_bad_syntax_are_protocol_errors(data, kind):
    with pytest.raises(d.ProtocolError) as err:
        d.RequestReader().feed(data)
    assert err.value.kind == kind
    assert err.value.reply().startswith(b"action=451 4.3.5 resolverguard policy service: ")


def answer(policy, **attrs):
    req = d.RequestReader().feed(request(**attrs))[0]
    cfg = Config()
    return d.decide(req, policy, cfg.policy_mode, cfg.policy_template, NOW)


def test_a_typo_recipient_is_refused_with_the_suggestion_and_an_event(policy):
    got = answer(policy, recipient="user@army.ml", sasl_username="alice", client_address="192.0.2.7")
    assert got.action.startswith("550 5.1.2 ") and "Did you mean <user@army.mil>?" in got.action
    assert got.labels == ("army.mil", "tld_typo", "reject") and got.reply == "reject"
    ev = got.event
    assert ev["event"] == "submission_refusal" and ev["sender"] == "alice@example.org"
    assert (ev["recipient"], ev["suggestion"], ev["protected"], ev["class"]) == (
        "user@army.ml",
        "user@army.mil",
        "army.mil",
        "tld_typo",
    )
    assert ev["sasl_username"] == "alice" and ev["client_address"] == "192.0.2.7" and "client_name" in ev
    assert got.line().endswith(b"\n\n")


def test_defer_mode_gives_450(policy):
    req = d.RequestReader().feed(request(recipient="user@army.ml"))[0]
    assert d.decide(req, policy, "defer", Config().policy_template, NOW).action.startswith("450 4.1.2 ")


@pytest.mark.parametrize(
    "attrs",
    [
        {"recipient": "user@army.mil"},
        {"recipient": "user@mail.com"},  # a real domain one edit from gmail.com
        {"recipient": "user@army.ml", "protocol_state": "DATA"},
        {"recipient": "not an address"},
        {"recipient": ""},
    ],
)
def test_anything_else_is_dunno(policy, attrs):
    got = answer(policy, **attrs)
    assert (got.action, got.labels, got.event) == ("DUNNO", None, None)


def test_a_sender_exception_lets_only_that_sender_through_with_an_audit_event(policy):
    assert answer(policy, recipient="x@gmial.com").action.startswith("550 ")
    got = answer(policy, recipient="x@gmial.com", sender="BOB@example.org")
    assert got.action == "DUNNO" and got.event["event"] == "exception_allowed"
    assert got.event["exception"] == "gmial.com" and got.event["owner"] == "it"
    sasl = answer(policy, recipient="x@gmial.com", sender="", sasl_username="bob@example.org")
    assert sasl.action == "DUNNO"


def test_not_a_policy_request_is_an_error(policy):
    with pytest.raises(d.ProtocolError):
        d.decide({"request": "other"}, policy, "reject", Config().policy_template, NOW)
