"""The config schema: every key's type and range checked, every error naming file:line and the key as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from resolverguard.config import Config, load_config
from resolverguard.errors import ConfigError
from resolverguard.reload import load_policy, policy_warnings

BAD = [
    # (file text, expected message after "guard.toml:")
    ('[typo]\nsecond_level = { mil = "socom" }\n', "2: [typo] second_level: mil: expected a list"),
    ("[cache]\nentries = -5\n", "2: [cache] entries: must be >= 0, got -5"),
    ("[ratelimit]\nqps = -3\n", "2: [ratelimit] qps: must be >= 0, got -3"),
    ("[tcp]\nmax_connections = 0\n", "2: [tcp] max_connections: must be >= 1, got 0"),
    ("servfail_after = 30\n", "1: servfail_after: must be < 5, got 30"),
    ('[typo]\naction = "sink"\n\n[ratelimit]\naction = "bounce"\n', "5: [ratelimit] action: 'bounce' is not one of"),
    ('[export]\norigin = "rpz.example."\nclients = ["10.0.0.0/33"]\n', "3: [export] clients: bad network"),
    ('[typo]\nclasses = { typoo = "block" }\n', "2: [typo] classes: typoo: unknown typo class"),
    ('[typo]\nclasses = { omission = "maybe" }\n', "2: [typo] classes: omission: 'maybe' is not one of"),
    ('timeout = 0.5\nprotect = ["army.mil", "not a domain!"]\n', "2: protect: invalid label"),
    ("workers = 1.5\n", "1: workers: expected an integer, got 1.5"),
    ('randomize_case = "yes"\n', "1: randomize_case: expected true or false"),
    ('[sink]\nipv4 = "10.0.0.300"\n', "2: [sink] ipv4: bad address"),
    ('[typo]\nqtypes = ["A", "MXX"]\n', "2: [typo] qtypes: unknown query type 'MXX'"),
    ("[cache]\nmin_ttl = 600\nmax_ttl = 60\n", "2: [cache] min_ttl: 600 exceeds [cache] max_ttl"),
    ("timeout = 2.0\nservfail_after = 1.0\n", "1: timeout: 2 s per try exceeds servfail_after"),
    ('[typo]\nactoin = "sink"\n', "2: unknown key [typo] actoin (known: action,"),
    ("[frobnicate]\nx = 1\n", "1: unknown key 'frobnicate'"),
    ('typo = "sink"\n', "1: typo: expected a [typo] section"),
    ('listen = ["::1:53"]\n', "1: listen: ambiguous address '::1:53': write [::1]:53"),
    ('[export]\ntsig = { name = "k" }\n', "2: [export] tsig: expected { name = ..."),
    ("[export]\njournal_versions = 0\n", "2: [export] journal_versions: must be >= 1, got 0"),
]


def write(tmp_path: Path, text: str) -> str:
    (tmp_path / "zones").mkdir(exist_ok=True)
    path = tmp_path / "guard.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, expected", BAD)
def test_bad_values_name_file_line_and_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}:{expected}"), str(err.value)
    assert "\n" not in str(err.value)


def test_flags_are_checked_too_and_named_as_flags():
    with pytest.raises(ConfigError, match=r"^command line: workers: must be >= 1, got 0$"):
        load_config(None, {"workers": 0})


def test_every_field_is_a_schema_entry_with_a_valid_default():
    """Adding a key is one line in Config: its default must pass its own check."""
    cfg = load_config(None)
    assert cfg == Config(listen=cfg.listen)


def test_action_for_a_tld_entry_applies_to_the_names_under_it(tmp_path):
    path = write(tmp_path, 'protect = ["mil", "gmail.com"]\n[typo]\ndomains = { "mil" = "sink" }\n')
    policy = load_policy(load_config(path))
    assert policy.decide("navy.ml", 1, None).action == "sink"  # protected navy.mil, under the entry mil
    assert policy.decide("gmial.com", 1, None).action == "nxdomain"


def test_action_for_an_unprotected_domain_names_its_line(tmp_path):
    path = write(tmp_path, 'protect = ["army.mil"]\n\n[typo]\ndomains = { "navy.mil" = "sink" }\n')
    with pytest.raises(ConfigError, match=r"guard\.toml:4: \[typo\] domains: navy\.mil is not a protected domain"):
        load_policy(load_config(path))


@pytest.mark.parametrize("entry", ["com", "co.uk"])
def test_protecting_a_bare_public_suffix_is_a_warning(tmp_path, entry):
    path = write(tmp_path, f'protect = ["army.mil", "{entry}"]\n')
    cfg = load_config(path)
    policy = load_policy(cfg)
    assert [w for w in policy_warnings(cfg, policy.guard) if f"protected entry {entry} is a public suffix" in w]
    fine = load_config(write(tmp_path, 'protect = ["mil", "gmail.com"]\n'))
    assert not policy_warnings(fine, load_policy(fine).guard)
