"""refusal() and suggest(): the sink's pure core, table-driven."""

from __future__ import annotations

import pytest

from resolverguard.config import Config
from resolverguard.policy import Policy
from resolverguard.rpz import PolicyTable
from resolverguard.smtp_sink import refusal
from resolverguard.typo import TypoGuard

TEMPLATE = Config().smtp_sink_template


def policy(*protect: str) -> Policy:
    return Policy(table=PolicyTable([]), guard=TypoGuard.build(list(protect), []))


@pytest.mark.parametrize(
    "protect, recipient, suggestion",
    [
        (("army.mil",), "user@army.ml", "user@army.mil"),
        (("army.mil",), "user@Army.ML", "user@army.mil"),
        (("army.mil",), "user@mail.army.ml", "user@mail.army.mil"),
        (("mil",), "user@army.ml", "user@army.mil"),  # whole-TLD entry: the label under the protected TLD
        (("mil",), "user@navy.il", "user@navy.mil"),
        (("gmail.com",), "first.last@gmial.com", "first.last@gmail.com"),
    ],
)
def test_typo_neighbours_get_the_suggestion(protect, recipient, suggestion):
    answer = refusal(recipient, policy(*protect), "reject", TEMPLATE)
    assert (answer.code, answer.status, answer.suggestion) == (550, "5.1.2", suggestion)
    assert f"Did you mean <{suggestion}>?" in answer.line()


@pytest.mark.parametrize("recipient", ["user@army.mil", "user@example.com", "no-at-sign", "@army.ml", "x@a..b"])
def test_others_get_5_1_1_without_a_suggestion(recipient):
    answer = refusal(recipient, policy("army.mil"), "reject", TEMPLATE)
    assert (answer.code, answer.status, answer.suggestion) == (550, "5.1.1", None)
    assert "Did you mean" not in answer.line()


def test_defer_mode_is_4xx_with_the_same_text():
    reject = refusal("user@army.ml", policy("army.mil"), "reject", TEMPLATE)
    defer = refusal("user@army.ml", policy("army.mil"), "defer", TEMPLATE)
    assert (defer.code, defer.status, defer.text) == (450, "4.1.2", reject.text)
