"""`resolverguard check` and `resolverguard neighbours` as a user runs them: a real process, exit codes, JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from resolverguard.typo import TYPO_CLASSES

PROTECT = ["--protect", "army.mil", "--protect", "gmail.com", "--protect", "paypal.com"]


def _run(tmp_path, *argv: str) -> subprocess.CompletedProcess:
    (tmp_path / "zones").mkdir(exist_ok=True)  # the default zones dir exists: no warning on stderr
    return subprocess.run(
        [sys.executable, "-m", "resolverguard", *argv], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )


def _check(tmp_path, name: str, *extra: str) -> subprocess.CompletedProcess:
    return _run(tmp_path, "check", *PROTECT, *extra, "--", name)


@pytest.mark.parametrize(
    ("name", "protected", "typo_class"),
    [
        ("army.ml", "army.mil", "tld_typo"),
        ("mail.army.ml", "army.mil", "tld_typo"),
        ("arny.mil", "army.mil", "replacement"),
        ("gmial.com", "gmail.com", "transposition"),
        ("GMIAL.COM.", "gmail.com", "transposition"),  # case and the trailing dot do not matter
        ("p\u0430ypal.com", "paypal.com", "idn_homoglyph"),  # typed in Unicode: IDNA-encoded first
        ("xn--pypal-4ve.com", "paypal.com", "idn_homoglyph"),
        ("_dmarc.gmial.com", "gmail.com", "transposition"),  # labels a query may carry but a hostname may not
    ],
)
def test_check_blocked_exits_1_with_json_verdict(tmp_path, name, protected, typo_class):
    out = _check(tmp_path, name, "--json")
    assert out.returncode == 1, out.stderr
    result = json.loads(out.stdout)
    assert result["verdict"] == "blocked"
    assert result["protected"] == protected
    assert result["class"] == typo_class
    assert result["distance"] >= 1
    assert result["rule"] == "typo-detector"
    assert out.stderr == ""


@pytest.mark.parametrize("name", ["army.mil", "mail.army.mil", "mail.com", "example.org"])
def test_check_allowed_exits_0(tmp_path, name):
    out = _check(tmp_path, name, "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["verdict"] == "allowed"
    assert result["protected"] is None and result["class"] is None and result["rule"] is None


def test_check_text_output_names_the_protected_domain(tmp_path):
    out = _check(tmp_path, "army.ml")
    assert out.returncode == 1
    expected = "army.ml: blocked (nxdomain): army.ml resembles protected army.mil (tld_typo, distance 1)"
    assert out.stdout.strip() == expected
    allowed = _check(tmp_path, "army.mil")
    assert (allowed.returncode, allowed.stdout.strip()) == (0, "army.mil: allowed")


def test_check_log_only_class_is_not_blocked(tmp_path):
    out = _check(tmp_path, "gmail-login.com", "--json")  # dictionary is log-only by default (tld_swap blocks
    assert out.returncode == 0  # since issue 11)
    result = json.loads(out.stdout)
    assert result["verdict"] == "log-only" and result["class"] == "dictionary" and result["protected"] == "gmail.com"


def test_check_class_policy_from_config(tmp_path):
    cfg = tmp_path / "guard.toml"
    cfg.write_text('[typo]\nclasses = { transposition = "log-only" }\n')
    out = _check(tmp_path, "gmial.com", "--config", str(cfg), "--json")
    assert out.returncode == 0
    assert json.loads(out.stdout)["verdict"] == "log-only"


def test_check_qtype_outside_typo_qtypes_is_allowed(tmp_path):
    out = _check(tmp_path, "gmial.com", "--qtype", "TXT", "--json")
    assert out.returncode == 0
    assert json.loads(out.stdout)["verdict"] == "allowed"


def test_check_allow_list(tmp_path):
    out = _check(tmp_path, "gmial.com", "--allow", "gmial.com")
    assert out.returncode == 0


@pytest.mark.parametrize(
    "name",
    [
        "",  # empty
        "   ",
        "a" * 300,  # one label over 63 octets
        ".".join(["a" * 60] * 5),  # a name over 255 octets
        "a..b",  # an empty label
        "\u2603.com",  # a snowman: not IDNA
        "ab\u200d.com",  # a joiner where IDNA forbids it
        "x y.com",  # words, not a name
    ],
)
def test_check_garbage_is_one_line_exit_2(tmp_path, name):
    out = _check(tmp_path, name)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stderr.startswith("resolverguard: error: not a domain name")
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert out.stdout == ""


@pytest.mark.parametrize("name", ["\\000.com", "xn--zz-.com", "-.-", "a" * 63 + "." + "b" * 63 + ".ml"])
def test_check_odd_but_valid_query_names_get_a_verdict(tmp_path, name):
    out = _check(tmp_path, name, "--json")
    assert out.returncode in (0, 1), out.stderr
    assert json.loads(out.stdout)["verdict"] in ("allowed", "blocked", "log-only")


def test_check_unknown_qtype_is_one_line_exit_2(tmp_path):
    out = _check(tmp_path, "gmial.com", "--qtype", "BOGUS")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


def test_neighbours_json_is_keyed_by_class(tmp_path):
    out = _run(tmp_path, "neighbours", "gmail.com", "--json")
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert list(found) == list(TYPO_CLASSES)
    assert "gmial.com" in found["transposition"]
    assert "gmail.co" in found["tld_typo"]
    assert "g.mail.com" in found["dot_insertion"]
    assert "gmail.com" not in {n for names in found.values() for n in names}


def test_neighbours_of_mil_entry(tmp_path):
    out = _run(tmp_path, "neighbours", "mil", "--json")
    assert out.returncode == 0, out.stderr
    assert "army.ml" in json.loads(out.stdout)["tld_typo"]


def test_neighbours_text_is_class_tab_name(tmp_path):
    out = _run(tmp_path, "neighbours", "Army.Mil.")
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert all(len(row) == 2 and row[0] in TYPO_CLASSES for row in rows)
    assert ["tld_typo", "army.ml"] in rows and ["transposition", "amry.mil"] in rows


@pytest.mark.parametrize("domain", ["", "a" * 300, "\u2603.com", "a..b"])
def test_neighbours_garbage_is_one_line_exit_2(tmp_path, domain):
    out = _run(tmp_path, "neighbours", "--", domain)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_neighbours_real_lists_real_domains_with_verdict_and_reason(tmp_path):
    result = _run(tmp_path, "neighbours", "army.mil", "--real", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["domain"]: row for row in json.loads(result.stdout)}
    # army.net is real (a listed mail domain): allowed, and the reason says the data keeps it, not the rules
    assert rows["army.net"]["verdict"] == "allowed" and "established data" in rows["army.net"]["reason"]
    assert "tld_swap" in rows["army.net"]["reason"]
    assert rows["army.gov.lb"]["reason"].startswith("no rule matches")  # a foreign army: restricted suffix
    text = _run(tmp_path, "neighbours", "paypal.com", "--real")
    assert "allowed\tpaypal.de\t" in text.stdout
