"""Enumerate the typo-neighbours of a domain per class (dnstwist-like, deterministic) for export."""

from __future__ import annotations

from collections.abc import Iterable

from resolverguard import names
from resolverguard.typo import lists, numerals
from resolverguard.typo.classify import KEYBOARD, VOWELS, edits1
from resolverguard.typo.match import TYPO_CLASSES

DEFAULT_SWAP_TLDS = ("biz", "co", "com", "info", "io", "me", "net", "online", "org", "site", "top", "xyz")
_ASCII_LOOKALIKES = (("o", "0"), ("0", "o"), ("l", "1"), ("1", "l"), ("i", "1"), ("l", "i"), ("i", "l"),
                     ("m", "rn"), ("rn", "m"), ("w", "vv"), ("d", "cl"), ("cl", "d"))
_CYRILLIC = {"a": "а", "c": "с", "e": "е", "i": "і", "j": "ј", "o": "о", "p": "р", "s": "ѕ", "x": "х", "y": "у"}
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def _valid(name: str) -> bool:
    """Cheap LDH validity check for a generated name."""
    try:
        return names.normalise(name) == name
    except ValueError:
        return False


def _punycode(text: str) -> str:
    """The xn-- form of a lowercase Unicode label."""
    return "xn--" + text.encode("punycode").decode("ascii")


def _label_variants(label: str) -> dict[str, set[str]]:
    """One-edit and look-alike variants of one ASCII label, by class."""
    n = len(label)
    out: dict[str, set[str]] = {c: set() for c in TYPO_CLASSES}
    out["omission"] = {label[:i] + label[i + 1:] for i in range(n)}
    out["repetition"] = {label[:i] + c + label[i:] for i, c in enumerate(label)}
    out["transposition"] = {label[:i] + label[i + 1] + label[i] + label[i + 2:] for i in range(n - 1)}
    out["addition"] = {label + c for c in _ALNUM}
    out["hyphenation"] = {label[:i] + "-" + label[i:] for i in range(1, n)}
    out["plural"] = {label[:i + 1] + ("es" if label[i] in "sxz" else "s") + label[i + 1:] for i in range(2, n - 2)}
    for i, c in enumerate(label):
        near = KEYBOARD.get(c, frozenset())
        out["replacement"] |= {label[:i] + r + label[i + 1:] for r in near}
        if i < n - 1:
            out["insertion"] |= {label[:i] + r + label[i:] for r in near} | {label[:i + 1] + r + label[i + 1:] for r in near}
        if c in VOWELS:
            out["vowel_swap"] |= {label[:i] + v + label[i + 1:] for v in VOWELS}
        for bit in range(8):
            flipped = chr(ord(c) ^ (1 << bit))
            if flipped in _ALNUM or flipped == "-":
                out["bitsquatting"].add(label[:i] + flipped + label[i + 1:])
        if c in _CYRILLIC:
            out["idn_homoglyph"].add(_punycode(label[:i] + _CYRILLIC[c] + label[i + 1:]))
    for old, new in _ASCII_LOOKALIKES:
        start = label.find(old)
        while start != -1:
            out["homoglyph"].add(label[:start] + new + label[start + len(old):])
            start = label.find(old, start + 1)
    whole = "".join(_CYRILLIC.get(c, c) for c in label)
    if all(c != w for c, w in zip(label, whole)):
        out["idn_homoglyph"].add(_punycode(whole))
    return out


def _tld_typos(suffix: str) -> set[str]:
    """Listed public suffixes one edit from suffix (mil -> ml, il)."""
    typos = {t for t in edits1(suffix, _ALNUM + "-.") if t != suffix and names.is_listed_suffix(t)}
    if "." in suffix:
        typos.add(suffix.split(".", 1)[1])
    return typos


def neighbours(domain: str, tld_list: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Enumerated neighbours of a protected domain (or TLD entry like "mil") per class, sorted."""
    domain = names.normalise(domain)
    swap_tlds = sorted({names.normalise(t) for t in (tld_list if tld_list is not None else DEFAULT_SWAP_TLDS)})
    out: dict[str, set[str]] = {c: set() for c in TYPO_CLASSES}
    if names.is_public_suffix(domain):
        known = sorted(lists.mil_second_level()) if domain == "mil" else []
        joined = domain.replace(".", "")
        for label in known:
            out["tld_typo"] |= {f"{label}.{t}" for t in _tld_typos(domain)}
            out["dot_omission"].add(f"{label}{joined}.com")
            out["combo"] |= {f"{label}-{domain.replace('.', '-')}.com", f"{label}.{domain}.com"}
    else:
        label, suffix = domain.split(".", 1)
        if label.isascii() and not label.startswith("xn--"):
            for typo_class, variants in _label_variants(label).items():
                out[typo_class] |= {f"{v}.{suffix}" for v in variants}
            out["dot_insertion"] = {f"{label[:i]}.{label[i:]}.{suffix}" for i in range(1, len(label) - 1)}
            out["numeral"] = {f"{v}.{suffix}" for v in numerals.variants(label)}
            # two_edits is matched at query time only: a 10-character label has ~10^5 two-edit names
            for word in sorted(lists.dictionary_words()):
                out["dictionary"] |= {f"{label}-{word}.{suffix}", f"{label}{word}.{suffix}",
                                      f"{word}-{label}.{suffix}", f"{word}{label}.{suffix}"}
        parts = suffix.split(".")
        out["tld_typo"] = {f"{label}.{t}" for t in _tld_typos(suffix)}
        out["tld_swap"] = {f"{label}.{t}" for t in swap_tlds if t != suffix}
        out["dot_omission"] = {f"{label}{''.join(parts)}.com", f"{label}{''.join(parts)}.{suffix}"}
        if len(parts) > 1:
            out["dot_omission"].add(f"{label}{parts[0]}.{'.'.join(parts[1:])}")
        out["combo"] = {f"{label}-{'-'.join(parts)}.com", f"{domain}.com"}
    return {c: sorted(v for v in out[c] if v != domain and _valid(v)) for c in TYPO_CLASSES}
