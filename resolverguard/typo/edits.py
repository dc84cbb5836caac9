"""One-edit family: omission, insertion, addition, repetition, transposition, replacement, vowel_swap,
hyphenation, bitsquatting and plural, through a symmetric deletion index per suffix."""

from __future__ import annotations

from resolverguard.codes import TypoClass
from resolverguard.typo import family
from resolverguard.typo.classify import KEYBOARD, VOWELS, classify_edit
from resolverguard.typo.family import Hit, LabelFamily, add_id, deletions1, ids
from resolverguard.typo.match import TYPO_CLASSES

_CLASS_RANK = {name: rank for rank, name in enumerate(TYPO_CLASSES)}
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


class OneEdit(LabelFamily):
    """Every ASCII label and its deletions -> ids; a query meets them with itself and its deletions."""

    classes = (
        TypoClass.OMISSION,
        TypoClass.INSERTION,
        TypoClass.ADDITION,
        TypoClass.REPETITION,
        TypoClass.TRANSPOSITION,
        TypoClass.REPLACEMENT,
        TypoClass.VOWEL_SWAP,
        TypoClass.HYPHENATION,
        TypoClass.BITSQUATTING,
        TypoClass.PLURAL,
    )

    def add(self, pid: int, text: str, folded: str, suffix: str) -> None:
        if not text.isascii():
            return
        table = self.tables.setdefault(suffix, {})
        for key in (text, *sorted({text[:i] + text[i + 1 :] for i in range(len(text))})):
            add_id(table, key, pid)

    def finish(self) -> None:
        """Pair each suffix's index with its compiled prefilter (None without it)."""
        self.tables = {s: (index, family.prefilter(index, self.compiled)) for s, index in self.tables.items()}

    def match(self, table: tuple, label: str, keys: list[str] | None, labels: list[str]) -> Hit | None:
        table, quick = table
        if quick is not None and label.isascii() and "es" not in label and not quick.any_deletions(label, 1):
            return None  # the compiled "no": no deletion of the label can be a key
        if keys is None:
            keys = deletions1(label)
        if table.keys().isdisjoint(keys) and "es" not in label:
            return None
        best = None
        for pid in {pid for value in map(table.get, keys) if value is not None for pid in ids(value)}:
            typo_class = classify_edit(label, labels[pid])
            if typo_class is not None:
                rank = (_CLASS_RANK[typo_class], labels[pid])
                if best is None or rank < best[0]:
                    best = rank, (pid, typo_class, 1)
        if best is not None:
            return best[1]
        start = label.find("es", 3)
        while start != -1:  # plural with "es" after s, x or z: protonsmail -> protonsesmail
            if label[start - 1] in "sxz":
                base = label[:start] + label[start + 2 :]
                for pid in ids(table.get(base)):
                    if labels[pid] == base:
                        return pid, TypoClass.PLURAL, 2
            start = label.find("es", start + 1)
        return None

    def variants(self, label: str) -> dict[str, set[str]]:
        n = len(label)
        out: dict[str, set[str]] = {c: set() for c in self.classes}
        out[TypoClass.OMISSION] = {label[:i] + label[i + 1 :] for i in range(n)}
        out[TypoClass.REPETITION] = {label[:i] + c + label[i:] for i, c in enumerate(label)}
        out[TypoClass.TRANSPOSITION] = {label[:i] + label[i + 1] + label[i] + label[i + 2 :] for i in range(n - 1)}
        out[TypoClass.ADDITION] = {label + c for c in _ALNUM}
        out[TypoClass.HYPHENATION] = {label[:i] + "-" + label[i:] for i in range(1, n)}
        out[TypoClass.PLURAL] = {
            label[: i + 1] + ("es" if label[i] in "sxz" else "s") + label[i + 1 :] for i in range(2, n - 2)
        }
        for i, c in enumerate(label):
            near = KEYBOARD.get(c, frozenset())
            out[TypoClass.REPLACEMENT] |= {label[:i] + r + label[i + 1 :] for r in near}
            if i < n - 1:
                out[TypoClass.INSERTION] |= {label[:i] + r + label[i:] for r in near} | {
                    label[: i + 1] + r + label[i + 1 :] for r in near
                }
            if c in VOWELS:
                out[TypoClass.VOWEL_SWAP] |= {label[:i] + v + label[i + 1 :] for v in VOWELS}
            for bit in range(8):
                flipped = chr(ord(c) ^ (1 << bit))
                if flipped in _ALNUM or flipped == "-":
                    out[TypoClass.BITSQUATTING].add(label[:i] + flipped + label[i + 1 :])
        return out
