"""Look-alike family: homoglyph (ASCII: rn/m, 0/o, cl/d, two steps) and idn_homoglyph (punycode labels
folded by the Unicode confusables table), through skeleton tables per suffix (typo/skeleton.py)."""

from __future__ import annotations

from rapidfuzz.distance import Levenshtein

from resolverguard.codes import TypoClass
from resolverguard.typo import skeleton
from resolverguard.typo.family import Hit, Ids, LabelFamily, add_id, first_id

_ASCII_LOOKALIKES = (
    ("o", "0"),
    ("0", "o"),
    ("l", "1"),
    ("1", "l"),
    ("i", "1"),
    ("l", "i"),
    ("i", "l"),
    ("m", "rn"),
    ("rn", "m"),
    ("w", "vv"),
    ("d", "cl"),
    ("cl", "d"),
)
_CYRILLIC = {"a": "а", "c": "с", "e": "е", "i": "і", "j": "ј", "o": "о", "p": "р", "s": "ѕ", "x": "х", "y": "у"}


def _punycode(text: str) -> str:
    """The xn-- form of a lowercase Unicode label."""
    return "xn--" + text.encode("punycode").decode("ascii")


class LookAlikes(LabelFamily):
    """Loose skeletons (with their one- and two-step rewrites) and, for labels that do not fold to ASCII,
    strong skeletons -> ids. A suffix's table is (loose, strong), either may be None."""

    classes = (TypoClass.HOMOGLYPH, TypoClass.IDN_HOMOGLYPH)

    def __init__(self, compiled: bool = True) -> None:
        super().__init__(compiled)
        self._pending: list[tuple[str, int, str]] = []
        self._loose: dict[str, dict[str, Ids]] = {}
        self._strong: dict[str, dict[str, Ids]] = {}

    def add(self, pid: int, text: str, folded: str, suffix: str) -> None:
        if folded.isascii():
            self._pending.append((suffix, pid, skeleton.loose(folded)))
        else:
            add_id(self._strong.setdefault(suffix, {}), skeleton.strong(folded), pid)

    def finish(self) -> None:
        """Index each loose skeleton p with F(p) and F(F(p)), so a query looks up its own skeleton once.

        Look-alikes that change length (cl/d, lb/b, ...) reach a query skeleton q from p in up to two
        steps; storing every two-step forward rewrite at build time replaces the query's reverse
        rewrites. Three passes, so a key's first id is the closest look-alike (direct before rewritten).
        """
        rules = skeleton.FORWARD_RULES
        steps = [(suffix, pid, [loose]) for suffix, pid, loose in self._pending]
        for step in range(3):
            for suffix, pid, keys_now in steps:
                table = self._loose.setdefault(suffix, {})
                for key in keys_now:
                    add_id(table, key, pid)
            if step < 2:
                steps = [
                    (suffix, pid, [r for key in keys_now for r in skeleton.rewrites(key, rules)])
                    for suffix, pid, keys_now in steps
                ]
        self._pending = []
        self.tables = {s: (self._loose.get(s), self._strong.get(s)) for s in {*self._loose, *self._strong}}

    def match(self, table: tuple, label: str, keys: list[str], labels: list[str]) -> Hit | None:
        return self._lookup(table, label, label, TypoClass.HOMOGLYPH, labels)

    def match_idn(self, table: tuple, text: str, folded: str, labels: list[str]) -> Hit | None:
        return self._lookup(table, text, folded, TypoClass.IDN_HOMOGLYPH, labels) if folded.isascii() else None

    @staticmethod
    def _lookup(table: tuple, text: str, folded: str, typo_class: str, labels: list[str]) -> Hit | None:
        loose, strong = table
        if loose is not None:
            value = loose.get(skeleton.loose(folded))  # the index holds one- and two-step rewrites
            if value is not None:
                pid = first_id(value)
                return pid, typo_class, Levenshtein.distance(text, labels[pid])
        if strong is not None:
            value = strong.get(skeleton.strong(folded))
            if value is not None:
                pid = first_id(value)
                return pid, typo_class, Levenshtein.distance(text, labels[pid])
        return None

    def variants(self, label: str) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {TypoClass.HOMOGLYPH: set(), TypoClass.IDN_HOMOGLYPH: set()}
        for i, c in enumerate(label):
            if c in _CYRILLIC:
                out[TypoClass.IDN_HOMOGLYPH].add(_punycode(label[:i] + _CYRILLIC[c] + label[i + 1 :]))
        for old, new in _ASCII_LOOKALIKES:
            start = label.find(old)
            while start != -1:
                out[TypoClass.HOMOGLYPH].add(label[:start] + new + label[start + len(old) :])
                start = label.find(old, start + 1)
        whole = "".join(_CYRILLIC.get(c, c) for c in label)
        if all(c != w for c, w in zip(label, whole)):
            out[TypoClass.IDN_HOMOGLYPH].add(_punycode(whole))
        return out
