"""Domain list files, shipped lists and the neighbour enumerator."""

from __future__ import annotations

from pathlib import Path

import pytest

from resolverguard.errors import ZoneFileError
from resolverguard.typo import TYPO_CLASSES, TypoGuard, load_domain_list, neighbours
from resolverguard.typo.lists import established_domains, mil_second_level


def test_load_domain_list(tmp_path: Path) -> None:
    path = tmp_path / "protect.txt"
    path.write_text("# protected\nArmy.MIL.\n\nmil   # whole TLD\nbücher.de\n", encoding="utf-8")
    assert load_domain_list(path) == ["army.mil", "mil", "xn--bcher-kva.de"]


@pytest.mark.parametrize(("text", "line"), [("army.mil\nbad_name.com\n", 2), ("a b\n", 1), ("ok.com\n\n-x.com\n", 3)])
def test_load_domain_list_reports_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "protect.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ZoneFileError) as info:
        load_domain_list(path)
    assert info.value.line == line and info.value.path == str(path)


def test_missing_list_is_a_zone_file_error(tmp_path: Path) -> None:
    with pytest.raises(ZoneFileError):
        load_domain_list(tmp_path / "absent.txt")


def test_shipped_lists() -> None:
    assert {"army", "navy", "af", "disa", "mail"} <= mil_second_level()
    assert {"mail.com", "email.com", "hotmail.fr", "outlook.de", "microsoft.us"} <= established_domains()


def test_neighbours_are_sorted_deterministic_and_cover_every_class() -> None:
    result = neighbours("army.mil")
    assert tuple(result) == TYPO_CLASSES
    assert result == neighbours("army.mil")
    assert all(v == sorted(v) and "army.mil" not in v for v in result.values())
    assert {"army.ml", "army.il"} <= set(result["tld_typo"])
    assert "amry.mil" in result["transposition"] and "ar.my.mil" in result["dot_insertion"]
    assert "army-mil.com" in result["combo"] and "army.mil.com" in result["combo"]
    assert "armymil.com" in result["dot_omission"]
    assert neighbours("army.mil", tld_list=["xyz"])["tld_swap"] == ["army.xyz"]


def test_neighbours_of_a_tld_entry() -> None:
    result = neighbours("mil")
    assert {"army.ml", "navy.il", "af.ml"} <= set(result["tld_typo"])
    assert "some.ml" not in result["tld_typo"]


@pytest.mark.parametrize("domain", ["army.mil", "gmail.com", "paypal.com", "lockheedmartin.com"])
def test_guard_finds_what_neighbours_enumerates(domain: str) -> None:
    guard = TypoGuard.build([domain], cache_size=0)
    for typo_class, names in neighbours(domain).items():
        missed = [n for n in names if guard.find_neighbour(n) is None and n not in established_domains()]
        assert not missed, (typo_class, missed[:10])


def test_short_labels_get_every_class() -> None:
    # issue 11 changed this: mod used to get exact variants only (m0d); now every class, minus real domains
    guard = TypoGuard.build(["mod.gov.uk"], cache_size=0)
    enumerated = neighbours("mod.gov.uk")
    found = {c: [n for n in names if guard.find_neighbour(n)] for c, names in enumerated.items()}
    for typo_class in ("omission", "transposition", "replacement", "tld_typo", "dot_omission", "combo"):
        real = [n for n in enumerated[typo_class] if n not in found[typo_class]]
        assert found[typo_class] and all(n in established_domains() for n in real), (typo_class, real)
    assert "m0d.gov.uk" in found["replacement"] and "md.gov.uk" in found["omission"]
