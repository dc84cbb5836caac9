"""Two-edit family (two_edits): labels of 8+ characters, Damerau-Levenshtein distance 2 (a transposition
is one edit): raythneo.com, protonma22.com. Matched at query time only; not enumerated (a 10-character
label has about 10^5 two-edit names)."""

from __future__ import annotations

from itertools import combinations

from rapidfuzz.distance import DamerauLevenshtein

from resolverguard.codes import TypoClass
from resolverguard.typo import family
from resolverguard.typo.family import Hit, LabelFamily, add_id, deletions1, ids

# Words that real names share at their end (fast|mail, ease|mail, fuse|mail): two edits both before one of
# them change the name, not a keystroke (docs/typo.md, "typo-shaped rules").
SHARED_WORDS = ("mail", "post", "box", "net", "web", "online", "cloud", "soft", "tech", "bank", "group", "link")
SHORT_HEAD = 4
TWO_EDIT_LENGTH = 8  # labels of 8+ characters get a two-edit budget; shorter ones one edit (docs/typo.md)


class TwoEdits(LabelFamily):
    """Each long label with its 1- and 2-deletions -> ids, per suffix, and the longest label's length."""

    classes = (TypoClass.TWO_EDITS,)

    def add(self, pid: int, text: str, folded: str, suffix: str) -> None:
        if not text.isascii() or len(text) < TWO_EDIT_LENGTH:
            return
        table, longest = self.tables.get(suffix, ({}, 0))
        keys = {
            text,
            *(text[:i] + text[i + 1 :] for i in range(len(text))),
            *map("".join, combinations(text, len(text) - 2)),
        }
        for key in sorted(keys):
            add_id(table, key, pid)
        self.tables[suffix] = table, max(longest, len(text))

    def finish(self) -> None:
        """Add the compiled prefilter of each suffix's keys (None without it): (index, longest, prefilter)."""
        self.tables = {
            s: (index, longest, family.prefilter(index, self.compiled))
            for s, (index, longest, *_) in self.tables.items()
        }

    def match(self, table: tuple, label: str, keys: list[str] | None, labels: list[str]) -> Hit | None:
        """The query's own 2-deletions can only meet the index when it is 8+ long; shorter queries probe
        their 1-deletions. The 2-deletions are consumed lazily: the probe stops at the first hit. The
        compiled prefilter answers "no" for most labels without building a string per deletion."""
        index, longest, prefilter = table
        if not TWO_EDIT_LENGTH - 2 <= len(label) <= longest + 2:
            return None
        if (
            prefilter is not None
            and label.isascii()
            and not prefilter.any_deletions(label, 2 if len(label) >= TWO_EDIT_LENGTH else 1)
        ):
            return None
        if keys is None:
            keys = deletions1(label)
        present = index.keys()
        if len(label) < TWO_EDIT_LENGTH:
            if present.isdisjoint(keys):
                return None
            probe = keys
        else:
            if present.isdisjoint(keys) and present.isdisjoint(map("".join, combinations(label, len(label) - 2))):
                return None
            probe = [*keys, *map("".join, combinations(label, len(label) - 2))]
        best = None
        for pid in {pid for value in map(index.get, probe) if value is not None for pid in ids(value)}:
            distance = DamerauLevenshtein.distance(label, labels[pid], score_cutoff=2)
            if distance == 2 and not typo_shaped(label, labels[pid]):
                continue
            if distance <= 2 and (best is None or (distance, labels[pid]) < best[:2]):
                best = distance, labels[pid], pid
        return None if best is None else (best[2], TypoClass.TWO_EDITS, best[0])


def typo_shaped(query: str, protected: str) -> bool:
    """False for two-edit pairs that are other names, not typing: one label containing the other
    (onmicrosoft ⊃ microsoft is a combination) or both edits before a shared common word (ease|mail)."""
    if protected in query or query in protected:
        return False
    tail = 0
    while tail < min(len(query), len(protected)) and query[-1 - tail] == protected[-1 - tail]:
        tail += 1
    shared = query[len(query) - tail :]
    # both edits in a short head (fast|mail: 2 of 4 letters changed) make another word; a long head
    # (proton|mail) keeps its shape with two slips, so it stays a typo
    return not any(shared.endswith(word) and len(protected) - len(word) <= SHORT_HEAD for word in SHARED_WORDS)
