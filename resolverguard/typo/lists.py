"""Domain list files: the operator's lists and the lists shipped in resolverguard/data."""

from __future__ import annotations

import functools
import os
from importlib import resources

from resolverguard import names
from resolverguard.errors import ZoneFileError


def _entries(text: str) -> list[tuple[int, str]]:
    """(line number, entry) for each non-blank line, with '#' comments removed."""
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            out.append((number, entry))
    return out


def load_domain_list(path: str | os.PathLike[str]) -> list[str]:
    """Read one domain per line ('#' comments, blank lines); ZoneFileError on an invalid name."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ZoneFileError(path, None, f"cannot read: {exc}") from exc
    domains = []
    for number, entry in _entries(text):
        if len(entry.split()) != 1:
            raise ZoneFileError(path, number, f"expected one domain per line, got {entry!r}")
        try:
            domains.append(names.normalise(entry))
        except ValueError as exc:
            raise ZoneFileError(path, number, str(exc)) from None
    return domains


@functools.cache
def shipped(filename: str) -> frozenset[str]:
    """A list shipped in resolverguard/data (labels or domains, normalised)."""
    text = resources.files("resolverguard").joinpath("data", filename).read_text(encoding="utf-8")
    return frozenset(names.normalise(entry) for _, entry in _entries(text))


def mil_second_level() -> frozenset[str]:
    """Known second-level labels of .mil (army, navy, af, disa, ...)."""
    return shipped("mil-second-level.txt")


def established_domains() -> frozenset[str]:
    """Legitimate registrable domains one edit or a TLD away from popular protected ones."""
    return shipped("established-domains.txt")


def exact_only_labels() -> frozenset[str]:
    """Short or common-word labels matched only by exact variants (TLD typo, look-alike, combo)."""
    return shipped("exact-only-labels.txt")


def dictionary_words() -> frozenset[str]:
    """Words glued to brand labels by squatters (login, portal, secure, ...)."""
    return shipped("dictionary-words.txt")
