"""Exceptions: the file's validation (file:line), expiry with an injected clock, editing that keeps comments."""

from __future__ import annotations

import pytest

from resolverguard import exceptions as ex
from resolverguard.config import load_config
from resolverguard.errors import ZoneFileError
from resolverguard.policy import expire
from resolverguard.reload import load_policy

T0 = ex.parse_when("2026-06-01T12:00:00Z")
GOOD = """\
# reviewed by the SOC
[[exception]]
name = "army.ml"   # Mali MoD
owner = "j.smith"
reason = "contract"
until = 2026-06-02T00:00:00Z

[[exception]]
name = "gmial.com"
owner = "it"
reason = "customer"
until = 2026-06-30
senders = ["Alice@Example.org"]
"""


def test_parse_reads_every_field_and_the_date_is_the_end_of_that_day_utc():
    got = ex.parse(GOOD, "x.toml")
    a, g = got.entries
    assert (a.name, a.owner, a.reason, a.line) == ("army.ml", "j.smith", "contract", 2)
    assert g.until == ex.parse_when("2026-06-30T23:59:59Z") and g.senders == ("alice@example.org",)
    assert ex.parse_when("2026-06-30") == ex.parse_when("2026-06-30T23:59:59+00:00")
    assert ex.parse_when("2026-06-30T20:00") == ex.parse_when("2026-06-30T20:00Z")  # no offset: UTC


@pytest.mark.parametrize(
    "body, line, words",
    [
        ('[[exception]]\nname = "army.ml"\nowner = "x"\nuntil = 2026-07-01\n', 1, "missing reason"),
        ('[[exception]]\nname = "army.ml"\nowner = "x"\nreason = "y"\n', 1, "missing until"),
        ('[[exception]]\nname = "ml"\nowner = "x"\nreason = "y"\nuntil = 2026-07-01\n', 2, "public suffix"),
        ('[[exception]]\nname = "a b"\nowner = "x"\nreason = "y"\nuntil = 2026-07-01\n', 2, "bad name"),
        ('[[exception]]\nname = "army.ml"\nowner = "x"\nreason = "y"\nuntil = "soon"\n', 5, "until"),
        (
            '[[exception]]\nname = "army.ml"\nowner = "x"\nreason = "y"\nuntil = 2026-07-01\ncolor = 1\n',
            6,
            "unknown key",
        ),
        (
            '[[exception]]\nname = "army.ml"\nowner = "x"\nreason = "y"\nuntil = 2026-07-01\nsenders = ["a b"]\n',
            6,
            "sender",
        ),
        (GOOD + '[[exception]]\nname = "ARMY.ML"\nowner = "x"\nreason = "y"\nuntil = 2026-07-01\n', 14, "duplicate"),
        ("[[exception]\n", 1, ""),
    ],
)
def test_bad_files_name_the_line(body, line, words):
    with pytest.raises(ZoneFileError) as err:
        ex.parse(body, "zones/exceptions.toml")
    assert err.value.line == line and str(err.value).startswith(f"zones/exceptions.toml:{line}: ")
    assert words in str(err.value)


def test_expiry_with_an_injected_clock():
    got = ex.parse(GOOD, "x.toml")
    assert got.for_domain("mail.army.ml", T0).name == "army.ml"
    assert got.for_domain("army.ml", ex.parse_when("2026-06-02T00:00:01Z")) is None  # ended
    assert got.for_domain("gmial.com", T0) is None  # sender-only: not domain-wide
    assert got.for_sender("gmial.com", T0, "ALICE@example.org", "").name == "gmial.com"
    assert got.for_sender("gmial.com", T0, "bob@example.org", "alice") is None
    assert got.for_sender("gmial.com", T0, "", "alice@example.org") is not None  # the SASL user counts too
    assert got.expiring(T0) == 1 and len(got.active(T0)) == 2
    assert not got.entries[0].as_json(T0)["expired"] and got.entries[0].as_json(T0 + 86_400)["expired"]


def test_editing_keeps_comments_and_refuses_a_duplicate():
    entry = ex.Entry("amry.mil", "o", "r", T0, ())
    text = ex.added(GOOD, entry)
    assert "# reviewed by the SOC" in text and "# Mali MoD" in text
    assert [e.name for e in ex.parse(text, "x").entries] == ["army.ml", "gmial.com", "amry.mil"]
    with pytest.raises(Exception, match="exists already"):
        ex.added(text, entry)
    back = ex.removed(text, "amry.mil")
    assert [e.name for e in ex.parse(back, "x").entries] == ["army.ml", "gmial.com"] and "# Mali MoD" in back


def test_a_domain_wide_exception_passes_dns_until_it_expires(tmp_path):
    (tmp_path / "p.protect").write_text("army.mil\n")
    (tmp_path / "exceptions.toml").write_text(
        f'[[exception]]\nname = "army.ml"\nowner = "o"\nreason = "r"\nuntil = {ex.iso(2_000_000_000)}\n'
    )
    policy = load_policy(load_config(None, {"zones_dir": str(tmp_path)}))
    assert policy.decide("mail.army.ml", 15, None).outcome == "passthru"
    assert policy.decide("mail.army.ml", 15, None).rpz.zone == "exceptions"
    assert policy.mail_match("army.ml", 1_900_000_000) is None
    assert expire(policy, 1_900_000_000) is None  # still active: the same snapshot stays
    later = expire(policy, 2_000_000_001)
    assert later is not None and later.generation == policy.generation + 1
    assert later.decide("mail.army.ml", 15, None).outcome == "blocked_typo"
    assert later.mail_match("army.ml", 2_000_000_001) is not None


def test_the_export_carries_the_passthru_while_active_and_changes_when_it_ends(tmp_path):
    from resolverguard.export import SerialStore, build_policy

    (tmp_path / "p.protect").write_text("army.mil\n")
    (tmp_path / "exceptions.toml").write_text(
        f'[[exception]]\nname = "army.ml"\nowner = "o"\nreason = "r"\nuntil = {ex.iso(2_000_000_000)}\n'
    )
    policy = load_policy(load_config(None, {"zones_dir": str(tmp_path)}))
    serials = SerialStore(clock=lambda: 100)
    active = build_policy(policy, serials=serials)
    lines = {r.line() for r in active.records}
    assert "army.ml 300 CNAME rpz-passthru." in lines and "*.army.ml 300 CNAME rpz-passthru." in lines
    ended = build_policy(expire(policy, 2_000_000_001), serials=serials)
    assert "army.ml 300 CNAME ." in {r.line() for r in ended.records}
    assert ended.serial > active.serial


def test_the_sink_honours_a_domain_wide_exception_and_ignores_a_sender_one(tmp_path):
    from resolverguard.config import Config
    from resolverguard.smtp_sink import refusal

    (tmp_path / "p.protect").write_text("army.mil\n")
    until = ex.iso(4_000_000_000)
    (tmp_path / "exceptions.toml").write_text(
        f'[[exception]]\nname = "army.ml"\nowner = "o"\nreason = "r"\nuntil = {until}\n'
        f'[[exception]]\nname = "amry.mil"\nowner = "o"\nreason = "r"\nuntil = {until}\nsenders = ["a@b.c"]\n'
    )
    policy = load_policy(load_config(None, {"zones_dir": str(tmp_path)}))
    template = Config().smtp_sink_template
    assert refusal("user@army.ml", policy, "reject", template).match is None  # no suggestion, no typo count
    assert refusal("user@amry.mil", policy, "reject", template).match is not None  # sender-only: DNS side blocks
    assert policy.decide("amry.mil", 15, None).outcome == "blocked_typo"
