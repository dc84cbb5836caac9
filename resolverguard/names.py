"""Pure helpers for DNS names as text: normalise, public suffix, registrable domain and parents."""

from __future__ import annotations

import functools
import re

import dns.exception
import dns.name
import idna
import publicsuffixlist

_LDH_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
MAX_NAME_LENGTH = 253


@functools.cache
def _psl() -> publicsuffixlist.PublicSuffixList:
    """The bundled ICANN section of the Public Suffix List (offline)."""
    return publicsuffixlist.PublicSuffixList(only_icann=True)


@functools.cache
def psl_rules() -> frozenset[str]:
    """The raw PSL rules ("co.uk", "*.ck", "!www.ck"), for set lookups at query time."""
    rules = getattr(_psl(), "_publicsuffix", None)
    if not isinstance(rules, frozenset):  # library internals changed: fall back to the slow path
        return frozenset()
    return rules


def normalise(text: str) -> str:
    """Lowercase, IDNA-encode and strip the trailing dot of a domain name; ValueError on garbage."""
    if not isinstance(text, str):
        raise ValueError(f"not a domain name: {text!r}")
    name = text.strip().rstrip(".") if text.strip() != "." else ""
    if not name or ".." in name or name.startswith("."):
        raise ValueError(f"not a domain name: {text!r}")
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"not a domain name: {text!r} ({exc})") from None
    name = name.lower()
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"name longer than {MAX_NAME_LENGTH} characters: {_short(text)}")
    for label in name.split("."):
        if not _LDH_LABEL.match(label):
            raise ValueError(f"invalid label {label!r} in {text!r}")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except idna.IDNAError as exc:
                raise ValueError(f"invalid IDN label {label!r} in {text!r} ({exc})") from None
    return name


def query_text(text: str) -> str:
    """A name typed by a user, as the server sees it on the wire: lowercase, escaped, no trailing dot.

    Unlike normalise() it accepts any label bytes a query may carry (``_dmarc``, ``\\000``); "." is the
    root (""). Non-ASCII labels are IDNA-encoded (UTS #46). ValueError, with a one-line reason, on an
    empty name, an empty label, a label over 63 or a name over 255 octets, or Unicode IDNA rejects.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("not a domain name: empty")
    name = text.strip()
    if name == ".":
        return ""
    if not name.isascii():
        labels = []
        for label in name.split("."):
            try:
                labels.append(label if label.isascii() else idna.encode(label, uts46=True).decode("ascii"))
            except (idna.IDNAError, UnicodeError) as exc:
                raise ValueError(f"not a domain name: {_short(text)} (IDNA: {exc})") from None
        name = ".".join(labels)
    try:
        parsed = dns.name.from_text(name, origin=dns.name.root)
    except dns.exception.DNSException as exc:
        raise ValueError(f"not a domain name: {_short(text)} ({exc})") from None
    return parsed.to_text(omit_final_dot=True).lower()


def _short(text: str) -> str:
    """repr() of user text, cut to 60 characters for a one-line message."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


def parents(name: str) -> list[str]:
    """The name and each of its parents, longest first: a.b.c -> [a.b.c, b.c, c]."""
    if not name:
        return []
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def is_public_suffix(name: str) -> bool:
    """True if name is an ICANN public suffix (any single label counts, as the PSL "*" rule says)."""
    if not name:
        return False
    if "." not in name:
        return True
    rules = psl_rules()
    if not rules:
        return bool(_psl().is_public(name))
    if "!" + name in rules:
        return False
    return name in rules or "*." + name in rules or "*." + name.split(".", 1)[1] in rules


@functools.cache
def private_suffixes() -> frozenset[str]:
    """The PRIVATE section of the PSL (blogspot.com, gov.scot, gov.nl, gov.ru): suffixes an operator
    lets others register under. Never neighbours, but not used for splitting (registrable() stays ICANN)."""
    full = getattr(publicsuffixlist.PublicSuffixList(), "_publicsuffix", None)
    if not isinstance(full, frozenset):
        return frozenset()
    return frozenset(r for r in full - psl_rules() if r[0] not in "*!")


def is_listed_suffix(name: str) -> bool:
    """True if name is written in the PSL as a rule (ml, co.uk), not just allowed by a wildcard."""
    return name in psl_rules()


def public_suffix(name: str) -> str | None:
    """The longest ICANN public suffix of name, or None for the root."""
    for candidate in parents(name):
        if is_public_suffix(candidate):
            return candidate
    return None


def registrable(name: str) -> str | None:
    """The registrable domain (public suffix plus one label) of name, or None if name is a suffix."""
    suffix = public_suffix(name)
    if suffix is None or len(suffix) >= len(name):
        return None
    head = name[: len(name) - len(suffix) - 1]
    return f"{head.rsplit('.', 1)[-1]}.{suffix}"
