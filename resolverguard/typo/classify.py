"""Name the typo class of a one-edit label pair, and enumerate one-edit variants of a string."""

from __future__ import annotations

from collections.abc import Iterator

from resolverguard.codes import TypoClass

# Keyboard neighbours: the union of QWERTY, QWERTZ and AZERTY (the same maps dnstwist uses).
_LAYOUTS = (
    {
        "1": "2q",
        "2": "3wq1",
        "3": "4ew2",
        "4": "5re3",
        "5": "6tr4",
        "6": "7yt5",
        "7": "8uy6",
        "8": "9iu7",
        "9": "0oi8",
        "0": "po9",
        "q": "12wa",
        "w": "3esaq2",
        "e": "4rdsw3",
        "r": "5tfde4",
        "t": "6ygfr5",
        "y": "7uhgt6",
        "u": "8ijhy7",
        "i": "9okju8",
        "o": "0plki9",
        "p": "lo0",
        "a": "qwsz",
        "s": "edxzaw",
        "d": "rfcxse",
        "f": "tgvcdr",
        "g": "yhbvft",
        "h": "ujnbgy",
        "j": "ikmnhu",
        "k": "olmji",
        "l": "kop",
        "z": "asx",
        "x": "zsdc",
        "c": "xdfv",
        "v": "cfgb",
        "b": "vghn",
        "n": "bhjm",
        "m": "njk",
    },
    {
        "6": "7zt5",
        "7": "8uz6",
        "t": "6zgfr5",
        "z": "7uhgt6",
        "u": "8ijhz7",
        "a": "qwsy",
        "s": "edxyaw",
        "g": "zhbvft",
        "h": "ujnbgz",
        "y": "asx",
        "x": "ysdc",
    },
    {
        "1": "2a",
        "2": "3za1",
        "3": "4ez2",
        "a": "2zq1",
        "z": "3esqa2",
        "e": "4rdsz3",
        "p": "lo0m",
        "q": "zswa",
        "s": "edxwqz",
        "j": "iknhu",
        "k": "olji",
        "l": "kopm",
        "m": "lp",
        "w": "sxq",
        "x": "wsdc",
        "n": "bhj",
    },
)
KEYBOARD: dict[str, frozenset[str]] = {}
for _layout in _LAYOUTS:
    for _key, _near in _layout.items():
        KEYBOARD[_key] = KEYBOARD.get(_key, frozenset()) | frozenset(_near)
VOWELS = frozenset("aeiou")
LOOKALIKE_PAIRS = frozenset(frozenset(p) for p in ("0o", "1l", "1i", "il"))
LDH = "abcdefghijklmnopqrstuvwxyz0123456789-"


def classify_edit(query: str, protected: str) -> str | None:
    """The class of a one-edit difference (Damerau) from protected to query, or None if not one edit."""
    n, m = len(query), len(protected)
    if n == m:
        diffs = [i for i in range(n) if query[i] != protected[i]]
        if len(diffs) == 1:
            a, b = query[diffs[0]], protected[diffs[0]]
            if frozenset((a, b)) in LOOKALIKE_PAIRS:
                return TypoClass.HOMOGLYPH
            if a in VOWELS and b in VOWELS:
                return TypoClass.VOWEL_SWAP
            if a in KEYBOARD.get(b, ()):
                return TypoClass.REPLACEMENT
            if (ord(a) ^ ord(b)).bit_count() == 1:
                return TypoClass.BITSQUATTING
            return TypoClass.REPLACEMENT
        if len(diffs) == 2 and diffs[1] == diffs[0] + 1:
            i = diffs[0]
            if query[i] == protected[i + 1] and query[i + 1] == protected[i]:
                return TypoClass.TRANSPOSITION
        return None
    if n == m + 1:
        i = _first_difference(query, protected)
        if query[:i] + query[i + 1 :] != protected:
            return None
        extra = query[i]
        if extra == "-":
            return TypoClass.HYPHENATION
        if (i > 0 and query[i - 1] == extra) or (i + 1 < n and query[i + 1] == extra):
            return TypoClass.REPETITION
        if i == n - 1 or query[i + 1] == "-":
            return TypoClass.ADDITION
        if extra == "s" and 2 < i < n - 2:
            return TypoClass.PLURAL
        return TypoClass.INSERTION
    if n == m - 1:
        i = _first_difference(query, protected)
        return TypoClass.OMISSION if protected[:i] + protected[i + 1 :] == query else None
    return None


def _first_difference(a: str, b: str) -> int:
    """Index of the first differing character (or the shorter length)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def edits1(text: str, alphabet: str = LDH + ".") -> Iterator[str]:
    """Every string one deletion, insertion, substitution or adjacent transposition from text."""
    for i in range(len(text) + 1):
        head, tail = text[:i], text[i:]
        if tail:
            yield head + tail[1:]
            if len(tail) > 1:
                yield head + tail[1] + tail[0] + tail[2:]
        for c in alphabet:
            yield head + c + tail
            if tail:
                yield head + c + tail[1:]
