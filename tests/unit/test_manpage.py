"""The man pages are generated from the argument parser and the config schema and shipped current."""

from __future__ import annotations

import tomllib
from pathlib import Path

from resolverguard.config import _SCHEMA, _written
from resolverguard.manpage import PAGES, render

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_man_pages_are_what_the_code_generates():
    pages = render()
    assert set(pages) == set(PAGES)
    for name, text in pages.items():
        shipped = ROOT / "man" / name
        assert shipped.exists() and shipped.read_text(encoding="utf-8") == text, (
            f"man/{name} is stale: run `python -m resolverguard.manpage man`"
        )


def test_every_command_flag_and_config_key_is_in_them():
    from resolverguard.cli import _parser
    from resolverguard.manpage import _subparsers

    page8, page5 = render()["resolverguard.8"], render()["resolverguard.toml.5"]
    for name, (sub, _help) in _subparsers(_parser()).items():
        assert f".SS {name}".replace("-", "\\-") in page8
        for action in sub._actions:
            for flag in [] if action.dest == "help" else action.option_strings:
                assert flag.replace("-", "\\-") in page8, flag
    for f in _SCHEMA.values():
        assert _written(f.metadata["toml"]).replace("-", "\\-") in page5


def test_the_package_installs_them():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    files = [x for group in setuptools["data-files"].values() for x in group]
    assert sorted(files) == sorted(f"man/{p}" for p in PAGES)
