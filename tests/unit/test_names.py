"""names: normalisation, public suffixes, registrable domains and parents."""

from __future__ import annotations

import publicsuffixlist
import pytest

from resolverguard import names


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Gmail.COM.", "gmail.com"),
        ("army.mil", "army.mil"),
        ("MIL", "mil"),
        ("bücher.de", "xn--bcher-kva.de"),
        (" army.mil ", "army.mil"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ],
)
def test_normalise(text: str, expected: str) -> None:
    assert names.normalise(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "a..b",
        "-army.mil",
        "army-.mil",
        "a b.com",
        "a_b.com",
        "x" * 64 + ".com",
        "xn--zz-.com",
        "*.example.com",
        ("a." * 127) + "com",
        "\\000.com",
    ],
)
def test_normalise_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        names.normalise(text)


def test_parents() -> None:
    assert names.parents("mail.army.ml") == ["mail.army.ml", "army.ml", "ml"]
    assert names.parents("") == []


PSL = publicsuffixlist.PublicSuffixList(only_icann=True)


@pytest.mark.parametrize(
    "name",
    [
        "mail.army.ml",
        "army.ml",
        "x.gov.uk",
        "gov.uk",
        "com",
        "a.b.c.unknowntld",
        "army.ck",
        "www.ck",
        "mod.gov.uk",
        "smtp.gmial.com",
        "a.b.kawasaki.jp",
        "city.kawasaki.jp",
        "foo.blogspot.com",
    ],
)
def test_registrable_agrees_with_publicsuffixlist(name: str) -> None:
    assert names.registrable(name) == PSL.privatesuffix(name)
    assert names.public_suffix(name) == PSL.publicsuffix(name)


def test_is_public_suffix() -> None:
    assert names.is_public_suffix("mil") and names.is_public_suffix("co.uk") and names.is_public_suffix("gov.ua")
    assert not names.is_public_suffix("army.mil") and not names.is_public_suffix("")
    assert names.is_listed_suffix("ml") and not names.is_listed_suffix("con")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Gmial.COM.", "gmial.com"),
        (".", ""),
        ("_dmarc.gmial.com", "_dmarc.gmial.com"),
        ("\\000.com", "\\000.com"),
        ("p\u0430ypal.com", "xn--pypal-4ve.com"),
        ("_x.b\u00fccher.de", "_x.xn--bcher-kva.de"),
        ("x y.com", "x\\032y.com"),
        ("xn--zz-.com", "xn--zz-.com"),  # invalid punycode still reaches the guard on the wire: a verdict, not an error
    ],
)
def test_query_text_is_what_the_server_sees(text: str, expected: str) -> None:
    assert names.query_text(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "a" * 300, ".".join(["a" * 60] * 5), "a..b", "\u2603.com", "ab\u200d.com"])
def test_query_text_rejects_garbage_with_one_line(text: str) -> None:
    with pytest.raises(ValueError) as info:
        names.query_text(text)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200
