"""Issue 11 mechanisms, one test each; every example here was missed (or wrongly blocked) before."""

from __future__ import annotations

import pytest

from resolverguard.typo import TypoGuard
from resolverguard.typo.numerals import variants

PROTECTED = [
    "mil",
    "army.mil",
    "gmail.com",
    "live.com",
    "aol.com",
    "apple.com",
    "rtx.com",
    "mod.gov.uk",
    "gov.uk",
    "state.gov",
    "raytheon.com",
    "protonmail.com",
    "lockheedmartin.com",
    "office365.com",
    "icloud.com",
    "hotmail.com",
    "paypal.com",
    "amazon.com",
    "yahoo.com",
]


@pytest.fixture(scope="module")
def guard() -> TypoGuard:
    return TypoGuard.build(PROTECTED, cache_size=0)


def _blocked(guard: TypoGuard, qname: str) -> tuple[str, str] | None:
    match = guard.find_neighbour(qname)
    return (match.protected, match.typo_class) if match is not None and match.blocks else None


@pytest.mark.parametrize(
    ("qname", "protected", "typo_class"),
    [
        ("raythneo.com", "raytheon.com", "two_edits"),  # two transpositions
        ("protonma22.com", "protonmail.com", "two_edits"),  # two replacements
        ("lockheedmatrni.com", "lockheedmartin.com", "two_edits"),
        ("mail.lockhedmatin.com", "lockheedmartin.com", "two_edits"),  # two omissions, a host under it
        ("office3six5.com", "office365.com", "numeral"),
        ("officethreesixfive.com", "office365.com", "numeral"),
    ],
)
def test_two_edit_budget_for_long_labels_and_numerals(
    guard: TypoGuard, qname: str, protected: str, typo_class: str
) -> None:
    assert _blocked(guard, qname) == (protected, typo_class)


def test_two_edits_stop_below_eight_characters(guard: TypoGuard) -> None:
    assert _blocked(guard, "gmaiil.com") is not None  # one edit still applies to 4-7
    assert guard.find_neighbour("gnaiil.com") is None  # two edits of a 5-character label do not
    assert guard.find_neighbour("raytxyzon.com") is None  # three edits of an 8+ label do not


def test_numeral_variants() -> None:
    assert {"office3six5", "officethree65", "officethreesixfive"} <= variants("office365")
    assert "4ces" in variants("forces") and "forces" not in variants("forces")


@pytest.mark.parametrize(
    ("qname", "protected"),
    [
        ("liv.com", "live.com"),
        ("applle.com", "apple.com"),
        ("aoll.com", "aol.com"),
        ("rtxx.com", "rtx.com"),
        ("m0d.uk", "mod.gov.uk"),
        ("sttae.gov", "state.gov"),
        ("lvie.com", "live.com"),
    ],
)
def test_short_and_common_word_labels_get_edit_neighbours(guard: TypoGuard, qname: str, protected: str) -> None:
    result = _blocked(guard, qname)
    assert result is not None and result[0] == protected, (qname, result)


@pytest.mark.parametrize(
    "qname",
    [
        "mail.com",
        "email.com",
        "hotmail.fr",
        "ncloud.com",
        "ymail.com",
        "aon.com",
        "smtp.mail.com",
        "mx1.email.com",
        "imap.ncloud.com",
        "love.com",
        "yahoo.at",
    ],
)
def test_real_near_miss_domains_and_their_hosts_are_never_reported(guard: TypoGuard, qname: str) -> None:
    assert guard.find_neighbour(qname) is None


@pytest.mark.parametrize(
    ("qname", "typo_class"),
    [
        ("gvo.uk", "transposition"),
        ("gov0.uk", "addition"),
        ("govuk.com", "dot_omission"),
        ("gob.uk", "replacement"),
    ],
)
def test_public_suffix_entry_is_also_a_label_under_its_parent(guard: TypoGuard, qname: str, typo_class: str) -> None:
    assert _blocked(guard, qname) == ("gov.uk", typo_class)


@pytest.mark.parametrize("qname", ["gov.uk", "www.gov.uk", "hmrc.gov.uk", "gov.au", "gov.ua", "gov.co"])
def test_public_suffix_entry_leaves_itself_and_other_suffixes_alone(guard: TypoGuard, qname: str) -> None:
    assert guard.find_neighbour(qname) is None  # gov.au and gov.ua are public suffixes: no one registers them


@pytest.mark.parametrize(
    ("qname", "protected"),
    [
        ("army.ac", "army.mil"),
        ("army.io", "army.mil"),
        ("mod.co.uk", "mod.gov.uk"),
    ],
)
def test_tld_swap_blocks_by_default(guard: TypoGuard, qname: str, protected: str) -> None:
    assert _blocked(guard, qname) == (protected, "tld_swap")


@pytest.mark.parametrize(
    "qname",
    [
        "paypal.de",
        "amazon.ae",
        "yahoo.at",
        "amazon.de",
        "hotmail.fr",
        "aol.de",
        "army.gov.au",
        "army.mil.za",
        "army.mil.ng",
        "navy.mil.nz",
        "army.gov.in",
        "army.mil.br",
        "army.gouv.fr",
        "gmail.edu",
    ],
)  # foreign forces: restricted suffixes
def test_brand_owned_tld_variants_are_known_from_data(guard: TypoGuard, qname: str) -> None:
    assert guard.find_neighbour(qname) is None


@pytest.mark.parametrize(
    ("qname", "protected"),
    [
        ("wwwarmymil.com", "army.mil"),
        ("wwwgmail.com", "gmail.com"),
        ("www-gmail.com", "gmail.com"),
        ("hotmail.con", "hotmail.com"),
        ("smtp.hotmail.con", "hotmail.com"),
    ],
)
def test_www_glued_and_suffix_typos(guard: TypoGuard, qname: str, protected: str) -> None:
    result = _blocked(guard, qname)
    assert result is not None and result[0] == protected, (qname, result)


@pytest.mark.parametrize(
    ("qname", "protected"),
    [
        ("gmail-smtp.com", "gmail.com"),
        ("smtp-gmail.com", "gmail.com"),
        ("armymil.com", "army.mil"),
        ("gmailgov.com", "gmail.com"),
        ("rtx-secure.com", "rtx.com"),
    ],
)
def test_mail_and_military_vocabulary_words(guard: TypoGuard, qname: str, protected: str) -> None:
    match = guard.find_neighbour(qname)
    assert match is not None and match.protected == protected, qname
