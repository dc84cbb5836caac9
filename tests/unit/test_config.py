"""config.load_config: defaults, TOML tables, command-line overrides, and one file:line message per mistake."""

from __future__ import annotations

import pytest

from resolverguard.codes import QTYPE_NUMBERS, Action
from resolverguard.config import Config, Endpoint, load_config, parse_endpoint
from resolverguard.errors import ConfigError


def load(tmp_path, text: str, **overrides) -> Config:
    path = tmp_path / "guard.toml"
    path.write_text(text)
    return load_config(str(path), overrides)


def error(tmp_path, text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text)
    return str(exc.value)


def test_defaults_without_a_file():
    cfg = load_config(None)
    assert cfg.listen == (Endpoint("127.0.0.1", 8053), Endpoint("::1", 8053))
    assert cfg.typo_action == Action.NXDOMAIN and cfg.typo_qtypes == ("A", "AAAA", "MX")


def test_tables_map_to_settings_and_command_line_wins(tmp_path):
    cfg = load(
        tmp_path,
        'upstreams = ["127.0.0.1:5300"]\nworkers = 2\n[typo]\naction = "sink"\n'
        'qtypes = ["A", "SVCB"]\n[sink]\nipv4 = "192.0.2.53"\n[ratelimit]\nqps = 5\n',
        workers=3,
        listen=None,
    )
    assert cfg.upstreams == (Endpoint("127.0.0.1", 5300),)
    assert (cfg.workers, cfg.typo_action, cfg.sink_ipv4, cfg.ratelimit_qps) == (3, "sink", "192.0.2.53", 5.0)
    assert cfg.typo_qtypes == ("A", "SVCB") and QTYPE_NUMBERS["SVCB"] == 64


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("workers = 1\nbogus = 2\n", 2, "bogus"),
        ("[typo]\nnope = 1\n", 2, "[typo] nope"),
        ('[typo]\naction = "explode"\n', 2, "explode"),
        ('[typo.domains]\n"army.mil" = "explode"\n', None, "explode"),  # None: the line is not checked
        ('[typo.classes]\ntld_typo = "maybe"\n', None, "maybe"),
        ('[typo]\nqtypes = ["A", "BOGUS"]\n', 2, "BOGUS"),
        ('[ratelimit]\naction = "tarpit"\n', 2, "tarpit"),
        ('allow_clients = ["10.0.0.0/33"]\n', 1, "10.0.0.0/33"),
        ('[sink]\nipv4 = "not-an-ip"\n', 2, "not-an-ip"),
        ("timeout = 0\n", 1, "must be > 0"),
        ("workers = 0\n", 1, "must be >= 1"),
        ('workers = "two"\n', 1, "expected an integer"),
        ('listen = ["127.0.0.1:99999"]\n', 1, "port"),
        ('upstreams = ["dns.example"]\n', 1, "dns.example"),
        ("workers = = 1\n", 1, ""),
    ],
)
def test_mistakes_name_file_line_and_the_bad_value(tmp_path, text, line, words):
    message = error(tmp_path, text)
    where = f"{tmp_path / 'guard.toml'}:" + (f"{line}:" if line is not None else "")
    assert message.startswith(where), message
    assert words in message and "\n" not in message


def test_unreadable_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "missing.toml"))


def test_parse_endpoint_forms():
    assert parse_endpoint("[::1]:53") == Endpoint("::1", 53)
    assert parse_endpoint("::1") == Endpoint("::1", 53)
    assert parse_endpoint("localhost:8053") == Endpoint("127.0.0.1", 8053)
    assert parse_endpoint("127.0.0.1", 9153) == Endpoint("127.0.0.1", 9153)
    assert str(Endpoint("::1", 53)) == "[::1]:53"
