"""Enumerate the typo-neighbours of a domain per class (dnstwist-like, deterministic) for export."""

from __future__ import annotations

from collections.abc import Iterable

from resolverguard import names
from resolverguard.codes import TypoClass
from resolverguard.typo import lists
from resolverguard.typo.families import LABEL_FAMILIES
from resolverguard.typo.index import suffix_typos, swap_blocks
from resolverguard.typo.match import TYPO_CLASSES

DEFAULT_SWAP_TLDS = ("biz", "co", "com", "info", "io", "me", "net", "online", "org", "site", "top", "xyz")


def _valid(name: str) -> bool:
    """Cheap LDH validity check for a generated name."""
    try:
        return names.normalise(name) == name
    except ValueError:
        return False


def _label_variants(label: str) -> dict[str, set[str]]:
    """The variants of one ASCII label by class, from each label family's generator (typo/families.py)."""
    out: dict[str, set[str]] = {c: set() for c in TYPO_CLASSES}
    for family in LABEL_FAMILIES:
        for typo_class, found in family().variants(label).items():
            out[typo_class] |= found
    return out


def _tld_typos(suffix: str) -> set[str]:
    """Listed public suffixes one edit from suffix (mil -> ml, il): the detector's suffix typos, listed."""
    return {t for t in suffix_typos(suffix) if names.is_listed_suffix(t) or t == suffix.split(".", 1)[-1]}


def neighbours(domain: str, tld_list: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Enumerated neighbours of a protected domain (or TLD entry like "mil") per class, sorted."""
    domain = names.normalise(domain)
    swap_tlds = sorted({names.normalise(t) for t in (tld_list if tld_list is not None else DEFAULT_SWAP_TLDS)})
    out: dict[str, set[str]] = {c: set() for c in TYPO_CLASSES}
    if names.is_public_suffix(domain):
        known = sorted(lists.mil_second_level()) if domain == "mil" else []
        joined = domain.replace(".", "")
        for label in known:
            out[TypoClass.TLD_TYPO] |= {f"{label}.{t}" for t in _tld_typos(domain)}
            out[TypoClass.DOT_OMISSION].add(f"{label}{joined}.com")
            out[TypoClass.COMBO] |= {f"{label}-{domain.replace('.', '-')}.com", f"{label}.{domain}.com"}
    else:
        label, suffix = domain.split(".", 1)
        if label.isascii() and not label.startswith("xn--"):
            for typo_class, variants in _label_variants(label).items():
                out[typo_class] |= {f"{v}.{suffix}" for v in variants}
            out[TypoClass.DOT_INSERTION] = {f"{label[:i]}.{label[i:]}.{suffix}" for i in range(1, len(label) - 1)}
            for word in sorted(lists.dictionary_words()):
                out[TypoClass.DICTIONARY] |= {
                    f"{label}-{word}.{suffix}",
                    f"{label}{word}.{suffix}",
                    f"{word}-{label}.{suffix}",
                    f"{word}{label}.{suffix}",
                }
        parts = suffix.split(".")
        out[TypoClass.TLD_TYPO] = {f"{label}.{t}" for t in _tld_typos(suffix)}
        if swap_blocks(label, suffix):  # namespace-aware: only restricted names are swapped (docs/typo.md)
            out[TypoClass.TLD_SWAP] = {f"{label}.{t}" for t in swap_tlds if t != suffix}
        out[TypoClass.DOT_OMISSION] = {f"{label}{''.join(parts)}.com", f"{label}{''.join(parts)}.{suffix}"}
        if len(parts) > 1:
            out[TypoClass.DOT_OMISSION].add(f"{label}{parts[0]}.{'.'.join(parts[1:])}")
        out[TypoClass.COMBO] = {f"{label}-{'-'.join(parts)}.com", f"{domain}.com"}
    return {c: sorted(v for v in out[c] if v != domain and _valid(v)) for c in TYPO_CLASSES}
