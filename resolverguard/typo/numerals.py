"""Numbers written as words or digits (office365 -> office3six5, officethreesixfive; for -> 4)."""

from __future__ import annotations

from rapidfuzz.distance import Levenshtein

from resolverguard.codes import TypoClass
from resolverguard.typo.family import Hit, LabelFamily

# Each digit's spellings, and the sound-alike words squatters use for it (for/4, to/2, won/1, ate/8).
WORDS: dict[str, tuple[str, ...]] = {
    "0": ("zero",),
    "1": ("one", "won"),
    "2": ("two", "to", "too"),
    "3": ("three",),
    "4": ("four", "for"),
    "5": ("five",),
    "6": ("six",),
    "7": ("seven",),
    "8": ("eight", "ate"),
    "9": ("nine",),
}
_DIGIT_OF = {word: digit for digit, words in WORDS.items() for word in words}
MAX_VARIANTS = 64  # a label with many digits gets the single swaps and the all-at-once forms only
# Digits typed for letters (0r4nge, 4m4zon, g00gl3): fold them back; two or more digits in a label (one
# digit for a letter is already a one-edit replacement or homoglyph).
LEET = str.maketrans("0134579", "oleastg")
_LEET_KEY = "\x00"  # table keys for folded labels; no query label reaches the table with a NUL


def variants(label: str) -> set[str]:
    """Labels that differ from label by writing numbers the other way: one at a time, or all at once."""
    out: set[str] = set()
    digits = [i for i, c in enumerate(label) if c.isdigit()]
    for i in digits:
        for word in WORDS[label[i]]:
            out.add(label[:i] + word + label[i + 1 :])
    if len(digits) > 1:
        out.add("".join(WORDS[c][0] if c.isdigit() else c for c in label))
    for word, digit in _DIGIT_OF.items():
        start = label.find(word)
        while start != -1 and len(out) < MAX_VARIANTS:
            out.add(label[:start] + digit + label[start + len(word) :])
            start = label.find(word, start + 1)
    out.discard(label)
    return {v for v in out if v and v[0] != "-" and v[-1] != "-" and len(v) <= 63}


class Numerals(LabelFamily):
    """The numeral variants of each ASCII label -> its id, per suffix: one exact lookup per query label."""

    classes = (TypoClass.NUMERAL,)

    def add(self, pid: int, text: str, folded: str, suffix: str) -> None:
        if not text.isascii():
            return
        table = self.tables.setdefault(suffix, {})
        for variant in sorted(variants(text)):
            table.setdefault(variant, pid)
        if not any(c.isdigit() for c in text):
            table.setdefault(_LEET_KEY + text, pid)

    def match(self, table: dict[str, int], label: str, keys: list[str], labels: list[str]) -> Hit | None:
        pid = table.get(label)
        if pid is None and sum(c.isdigit() for c in label) >= 2:
            pid = table.get(_LEET_KEY + label.translate(LEET))
        return None if pid is None else (pid, TypoClass.NUMERAL, Levenshtein.distance(label, labels[pid]))

    def variants(self, label: str) -> dict[str, set[str]]:
        return {TypoClass.NUMERAL: variants(label)}
