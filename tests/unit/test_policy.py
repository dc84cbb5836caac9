"""policy.decide: overrides first, then the typo detector for the configured qtypes, else forward."""

from __future__ import annotations

from corefix import policy

from resolverguard.codes import Action, Verdict
from resolverguard.policy import FORWARD

A, TXT, MX = 1, 16, 15


def test_plain_name_is_forwarded():
    assert policy().decide("example.org", A, "127.0.0.1") is FORWARD
    assert FORWARD.action is Action.FORWARD and FORWARD.outcome is Verdict.FORWARDED and FORWARD.reason == ""


def test_typo_neighbour_is_blocked_with_the_configured_action():
    d = policy().decide("army.ml", A, None)
    assert (d.action, d.outcome) == (Action.NXDOMAIN, Verdict.BLOCKED_TYPO)
    assert d.typo is not None and d.typo.protected == "army.mil" and d.typo.typo_class == "tld_typo"
    assert "army.mil" in d.reason
    assert policy(typo_action=Action.REFUSED).decide("army.ml", MX, None).action == Action.REFUSED


def test_per_domain_action_beats_the_default():
    p = policy(domain_actions={"army.mil": Action.SINK})
    assert p.decide("army.ml", A, None).action == Action.SINK
    assert p.decide("gmial.com", A, None).action == Action.NXDOMAIN


def test_typo_detector_only_for_configured_qtypes():
    assert policy().decide("army.ml", TXT, None) is FORWARD
    assert policy(typo_qtypes=frozenset({TXT})).decide("army.ml", TXT, None).outcome == Verdict.BLOCKED_TYPO


def test_log_only_forwards_but_says_so():
    for p in (
        policy(typo_action=Action.LOG_ONLY),
        policy(domain_actions={"army.mil": "log-only"}),
        policy(class_policy={"tld_typo": "log-only"}),
    ):
        d = p.decide("army.ml", A, None)
        assert (d.action, d.outcome) == (Action.FORWARD, Verdict.LOGGED_TYPO) and d.typo is not None


def test_override_wins_over_the_typo_detector_and_over_any_qtype():
    p = policy("army.ml CNAME rpz-drop.\nworks.example CNAME .\n")
    d = p.decide("army.ml", A, None)
    assert (d.action, d.outcome, d.typo) == (Action.DROP, Verdict.BLOCKED_OVERRIDE, None)
    assert d.rpz is not None and d.rpz.owner == "army.ml" and "override army.ml in zone overrides" in d.reason
    assert p.decide("works.example", TXT, None).action == Action.NXDOMAIN


def test_passthru_override_lets_a_typo_neighbour_through():
    d = policy("army.ml CNAME rpz-passthru.\n").decide("army.ml", A, None)
    assert (d.action, d.outcome) == (Action.FORWARD, Verdict.PASSTHRU) and d.rpz is not None


def test_client_ip_rules_make_the_policy_client_dependent():
    p = policy("32.5.2.0.192.rpz-client-ip CNAME .\n")
    assert p.client_dependent and not policy("x.example CNAME .\n").client_dependent
    assert p.decide("x.example", A, "192.0.2.5").outcome == Verdict.BLOCKED_OVERRIDE
    assert p.decide("x.example", A, "192.0.2.6") is FORWARD
    assert p.decide("x.example", A, "not an address") is FORWARD  # unparseable client: no client rule applies
    assert p.decide("x.example", A, None) is FORWARD
