"""resolverguard(8) and resolverguard.toml(5) in roff, generated from the argument parser and the config schema.

`python -m resolverguard.manpage man/` rewrites man/resolverguard.8 and man/resolverguard.toml.5; a test
regenerates them and compares, so the pages cannot drift from the code. The package installs them under
share/man (pyproject.toml, [tool.setuptools.data-files]).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING
from pathlib import Path

from . import __version__

PAGES = ("resolverguard.8", "resolverguard.toml.5")


def _roff(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in text.splitlines())


def _header(name: str, section: int, summary: str) -> list[str]:
    return [
        f'.TH {name.upper()} {section} "" "resolverguard {__version__}" "resolverguard"',
        ".SH NAME",
        f"{_roff(name)} \\- {_roff(summary)}",
    ]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return {name: (sub, helps.get(name, "")) for name, sub in action.choices.items()}
    return {}


def page8() -> str:
    from .cli import DEFAULT_CONFIG, _parser

    parser = _parser()
    out = _header("resolverguard", 8, parser.description or "")
    out += [".SH SYNOPSIS", ".B resolverguard", "\\fICOMMAND\\fR [\\fIOPTIONS\\fR]", ".SH COMMANDS"]
    for name, (sub, help_text) in _subparsers(parser).items():
        usage = argparse.HelpFormatter(sub.prog, width=78)  # fixed width: the page must not depend on the terminal
        usage.add_usage(sub.usage, sub._actions, sub._mutually_exclusive_groups)
        out += [".SS " + _roff(name), _roff(help_text), ".PP", ".nf", _roff(usage.format_help().strip()), ".fi"]
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flags = ", ".join(action.option_strings) or action.dest
            metavar = (
                ""
                if action.nargs == 0
                else f" {action.metavar or action.dest.upper()}"
                if action.option_strings
                else ""
            )
            out += [".TP", f"\\fB{_roff(flags)}\\fR{_roff(metavar)}", _roff(action.help or "")]
    out += [
        ".SH FILES",
        ".TP",
        _roff(DEFAULT_CONFIG),
        "the config file read when no \\-\\-config is given; see \\fBresolverguard.toml\\fR(5)",
        ".SH EXIT STATUS",
        "0 success; 1 check: blocked, status: degraded, reload: refused; 2 a user error (one line naming file,"
        " line and key) or, for status and reload, the guard cannot be reached.",
        ".SH SEE ALSO",
        "\\fBresolverguard.toml\\fR(5), \\fBunbound\\-control\\fR(8)",
        "",
    ]
    return "\n".join(out)


def page5() -> str:
    from .config import _SCHEMA, _written

    out = _header("resolverguard.toml", 5, "resolverguard configuration file")
    out += [
        ".SH DESCRIPTION",
        "A TOML file; every key is optional. Command\\-line flags win over it. An unknown key, a wrong type or a "
        "bad value stops serve, lint and check with FILE:LINE: [section] key: problem and exit status 2.",
        ".SH KEYS",
    ]
    for name, f in _SCHEMA.items():
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        shown = default if not isinstance(default, tuple) else list(default)
        out += [".TP", f"\\fB{_roff(_written(f.metadata['toml']))}\\fR", _roff(f"default: {shown!r} (field {name})")]
    out += [".SH SEE ALSO", "\\fBresolverguard\\fR(8)", ""]
    return "\n".join(out)


def render() -> dict[str, str]:
    return {"resolverguard.8": page8(), "resolverguard.toml.5": page5()}


def main(argv: list[str]) -> int:
    target = Path(argv[0] if argv else "man")
    target.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (target / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
