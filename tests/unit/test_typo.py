"""TypoGuard: table-driven block and allow cases, policies, robustness; no sockets, no timing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolverguard.errors import ConfigError
from resolverguard.typo import TYPO_CLASSES, TypoGuard, TypoMatch

PROTECTED = ["army.mil", "gmail.com", "paypal.com", "hotmail.com", "outlook.com", "microsoft.com", "mod.gov.uk"]


@pytest.fixture(scope="module")
def guard() -> TypoGuard:
    return TypoGuard.build(PROTECTED)


@pytest.fixture(scope="module")
def mil_guard() -> TypoGuard:
    return TypoGuard.build(["mil", "gmail.com"])


BLOCK = [
    ("army.ml", "army.mil", "tld_typo"),
    ("www.army.ml", "army.mil", "tld_typo"),
    ("mail.army.ml", "army.mil", "tld_typo"),
    ("army.il", "army.mil", "tld_typo"),
    ("amry.mil", "army.mil", "transposition"),
    ("arny.mil", "army.mil", "replacement"),
    ("arm.mil", "army.mil", "omission"),
    ("armyy.mil", "army.mil", "repetition"),
    ("armya.mil", "army.mil", "addition"),
    ("a-rmy.mil", "army.mil", "hyphenation"),
    ("gmial.com", "gmail.com", "transposition"),
    ("smtp.gmial.com", "gmail.com", "transposition"),
    ("gmeil.com", "gmail.com", "vowel_swap"),
    ("gmaik.com", "gmail.com", "replacement"),
    ("gmaqil.com", "gmail.com", "insertion"),
    ("gmai1.com", "gmail.com", "homoglyph"),
    ("gmail.co", "gmail.com", "tld_typo"),
    ("gmail.cm", "gmail.com", "tld_typo"),
    ("xn--pypal-4ve.com", "paypal.com", "idn_homoglyph"),  # pаypal.com, Cyrillic а
    ("xn--80aa0cbo65f.com", "paypal.com", "idn_homoglyph"),  # раураl.com, whole-script Cyrillic
    ("rnicrosoft.com", "microsoft.com", "homoglyph"),
    ("armymil.com", "army.mil", "dot_omission"),
    ("gmailcom.com", "gmail.com", "dot_omission"),
    ("modgov.uk", "mod.gov.uk", "dot_omission"),
    ("army-mil.com", "army.mil", "combo"),
    ("army.mil.com", "army.mil", "combo"),
    ("www.army.mil.com", "army.mil", "combo"),
    ("ar.my.mil", "army.mil", "dot_insertion"),
    ("g.mail.com", "gmail.com", "dot_insertion"),  # under legitimate mail.com, still an imitation
    ("mod.gov.ua", "mod.gov.uk", "tld_typo"),
    ("mod.uk", "mod.gov.uk", "tld_typo"),
    ("paypals.com", "paypal.com", "addition"),
    ("protonmail.com", None, None),
]


@pytest.mark.parametrize(("qname", "protected", "typo_class"), BLOCK)
def test_neighbours_are_found_with_their_class(
    guard: TypoGuard, qname: str, protected: str | None, typo_class: str | None
) -> None:
    match = guard.find_neighbour(qname)
    if protected is None:
        assert match is None
        return
    assert match is not None, qname
    assert (match.protected, match.typo_class, match.policy) == (protected, typo_class, "block")
    assert match.qname == qname and match.distance >= 1


ALLOW = [
    "army.mil",
    "mail.army.mil",
    "navy.mil",
    "gmail.com",
    "smtp.gmail.com",
    "mail.com",
    "email.com",
    "hotmail.fr",
    "outlook.de",
    "microsoft.us",
    "some.ml",
    "example.com",
    "wikipedia.org",
    "debian.org",
    "python.org",
    "mail.google.com",
    "bbc.co.uk",
    "gov.uk",
    "mil",
    "com",
    "",
    "ml",
    "nic.ml",
    "mailchimp.com",
    "mcafee.com",
    "armstrong.com",
    "cnn.com",
    "nytimes.com",
    "ymail.com",
    "army.com",
]


@pytest.mark.parametrize("qname", ALLOW)
def test_legitimate_names_are_not_neighbours(guard: TypoGuard, qname: str) -> None:
    assert guard.find_neighbour(qname) is None


@pytest.mark.parametrize(
    ("qname", "protected"),
    [
        ("army.ml", "army.mil"),
        ("navy.ml", "navy.mil"),
        ("disa.ml", "disa.mil"),
        ("mail.navy.il", "navy.mil"),
        ("af.ml", "af.mil"),
        ("armymil.com", "army.mil"),
        ("army-mil.com", "army.mil"),
        ("navy.mil.com", "navy.mil"),
    ],
)
def test_tld_entry_blocks_known_second_level_names_under_typo_tlds(
    mil_guard: TypoGuard, qname: str, protected: str
) -> None:
    match = mil_guard.find_neighbour(qname)
    assert match is not None and match.protected == protected and match.policy == "block"


@pytest.mark.parametrize(
    "qname", ["some.ml", "example.ml", "www.example.il", "amry.mil", "army.mil", "anything.army.mil", "ml", "navy.com"]
)
def test_tld_entry_does_not_block_its_typo_tld_wholesale(mil_guard: TypoGuard, qname: str) -> None:
    assert mil_guard.find_neighbour(qname) is None  # all of .mil is protected, so amry.mil is exempt


def test_tld_second_level_can_be_extended() -> None:
    guard = TypoGuard.build(["mil"], tld_second_level={"mil": ["socom2"]})
    assert guard.find_neighbour("socom2.ml").protected == "socom2.mil"
    assert guard.find_neighbour("army.ml") is not None  # shipped list still applies


def test_allowlist_exempts_names_and_everything_under_them() -> None:
    guard = TypoGuard.build(["gmail.com"], allow=["gmial.com"])
    assert guard.find_neighbour("gmial.com") is None
    assert guard.find_neighbour("mx.gmial.com") is None
    assert guard.find_neighbour("gmaill.com") is not None


def test_short_and_common_labels_get_edit_neighbours_except_real_domains() -> None:
    # issue 11 changed this: short and common-word labels used to get exact variants only
    guard = TypoGuard.build(["aol.com", "mail.com", "state.gov"])
    for legit in ("aon.com", "email.com", "gmail.com", "ymail.com"):  # real: established data
        assert guard.find_neighbour(legit) is None, legit
    for typo, cls in (
        ("aol.co", "tld_typo"),
        ("a0l.com", "homoglyph"),
        ("aolcom.com", "dot_omission"),
        ("xn--ol-6kc.com", "idn_homoglyph"),  # аol, Cyrillic а
        ("aoll.com", "repetition"),
        ("al.com", "omission"),
        ("mial.com", "transposition"),
        ("sttae.gov", "transposition"),
    ):
        match = guard.find_neighbour(typo)
        assert match is not None and match.typo_class == cls, typo


def test_default_policies_and_overrides() -> None:
    guard = TypoGuard.build(["army.mil"], class_policy={"tld_swap": "log-only", "transposition": "log-only"})
    assert guard.find_neighbour("army.xyz").policy == "log-only"
    assert guard.find_neighbour("amry.mil").policy == "log-only"
    default = TypoGuard.build(["gmail.com", "army.mil"])
    assert default.find_neighbour("army.xyz").policy == "block"  # tld_swap of a restricted name blocks
    assert default.find_neighbour("gmail.xyz") is None  # issue 22: an open-suffix brand's swap is not reported
    assert default.find_neighbour("gmail-login.com").policy == "log-only"


@pytest.mark.parametrize("policy", [{"nonsense": "block"}, {"omission": "drop"}])
def test_bad_class_policy_is_a_config_error(policy: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        TypoGuard.build(["gmail.com"], class_policy=policy)


def test_protected_is_normalised() -> None:
    guard = TypoGuard.build(["Army.MIL.", "bücher.de"])
    assert guard.protected == frozenset({"army.mil", "xn--bcher-kva.de"})


def test_typo_classes_are_label_values() -> None:
    assert len(set(TYPO_CLASSES)) == len(TYPO_CLASSES)
    assert all(c.isascii() and c.islower() and " " not in c and "-" not in c for c in TYPO_CLASSES)


def test_describe_is_short_ascii() -> None:
    match = TypoMatch("army.ml", "army.ml", "army.mil", "tld_typo", 1, "block")
    assert match.describe() == "army.ml resembles protected army.mil (tld_typo, distance 1)"
    long = TypoMatch("x", "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + ".ml", "army.mil", "tld_typo", 1, "block")
    assert len(long.describe()) <= 200 and long.describe().isascii()


def test_decisions_are_cached_and_cache_can_be_disabled() -> None:
    guard = TypoGuard.build(["gmail.com"], cache_size=4)
    assert guard.find_neighbour("gmial.com") is guard.find_neighbour("gmial.com")
    for i in range(10):
        guard.find_neighbour(f"name{i}.example")
    assert guard.find_neighbour.cache_info().currsize == 4  # bounded: old names are evicted
    uncached = TypoGuard.build(["gmail.com"], cache_size=0)
    assert uncached.find_neighbour("gmial.com") == guard.find_neighbour("gmial.com")


@pytest.mark.parametrize(
    ("qname", "distance"),
    [
        ("lockheeclmartin.com", 2),  # d -> cl
        ("loclcheeclmartin.com", 4),  # k -> lc and d -> cl: two length-changing steps
        ("lockheeclrnartin.com", 4),  # d -> cl and m -> rn
        ("iockheeclmartin.com", 3),  # l -> i and d -> cl
    ],
)
def test_two_step_look_alikes(qname: str, distance: int) -> None:
    match = TypoGuard.build(["lockheedmartin.com"], cache_size=0).find_neighbour(qname)
    assert match is not None and (match.protected, match.typo_class, match.distance) == (
        "lockheedmartin.com",
        "homoglyph",
        distance,
    )


ODD = [
    "\\000.com",
    "a..b",
    ".",
    "..",
    "a" * 63 + ".com",
    ".".join(["a"] * 127),
    "xn--.com",
    "xn--zz-.com",
    "xn--a-ecp.ml",
    "-.-",
    "\\046army.ml",
    "army.ml.",
    "ARMY.ML",
    "*.gmail.com",
    "xn--80ak6aa92e.com",
    "a" * 300,
    "a" * 2000,
    "\u2603.com",
    "ab\u200d.com",
    "xn--" + "a" * 70 + ".com",
    ".".join(["a"] * 200),
    "army.ml" + ".x" * 40,
    "\x00",
    " ",
    "a.b.c.d.e.f.g.h.i.j.k.l.m.ar.my.mil",
    "x..com",
    ".com",
    "..mil",
    "a..mil",
    "gmail..com",
    "www..gmail.com",
]


@pytest.mark.parametrize("qname", ODD)
def test_odd_input_never_raises(guard: TypoGuard, qname: str) -> None:
    guard.find_neighbour(qname)


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from("abcmilgx-.0\\n1-"), max_size=80)
    | st.lists(
        st.sampled_from(["", "com", "mil", "gmail", "army", "ml", "xn--pypal-4ve", "-", "co", "uk"]), max_size=8
    ).map(".".join)
)
def test_fuzzed_input_never_raises(qname: str) -> None:
    _FUZZ_GUARD.find_neighbour(qname)


_FUZZ_GUARD = TypoGuard.build(PROTECTED + ["mil"], cache_size=0)
