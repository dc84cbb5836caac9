"""TypoGuard: a compiled neighbour index (hash maps and a deletion index) and the per-query lookup."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from itertools import combinations

from rapidfuzz.distance import DamerauLevenshtein, Levenshtein

from resolverguard import names
from resolverguard.typo import learned as learned_mod
from resolverguard.typo import lists, numerals, skeleton
from resolverguard.typo.classify import classify_edit, edits1
from resolverguard.typo.match import TYPO_CLASSES, TypoMatch, resolve_policy

log = logging.getLogger(__name__)

MAX_LEVELS = 10  # only the rightmost labels of a query are matched: protected names are shallow
TWO_EDIT_LENGTH = 8  # labels of 8+ characters get a two-edit budget (Damerau: a transposition is one edit)
MIN_GLUED_LABEL = 3  # rtxsecure.com: the protected part of a label glued to a dictionary word
MAX_JOINED_LABELS = 3  # dot insertion: ar.my.mil, a.r.my.mil
_CLASS_RANK = {name: rank for rank, name in enumerate(TYPO_CLASSES)}
_SUFFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-."

_Ids = int | tuple[int, ...]


def _add(table: dict[str, _Ids], key: str, pid: int) -> None:
    """Record pid under key; a key shared by several protected names holds a tuple."""
    old = table.get(key)
    if old is None:
        table[key] = pid
    elif isinstance(old, int):
        if old != pid:
            table[key] = (old, pid)
    elif pid not in old:
        table[key] = old + (pid,)


def _ids(value: _Ids | None) -> tuple[int, ...]:
    """The protected ids stored under one key."""
    if value is None:
        return ()
    return (value,) if isinstance(value, int) else value


def _learnable(label: str) -> bool:
    """True for an LDH label a registry could have delegated (not _dmarc, not a wildcard, not empty)."""
    try:
        return names.normalise(label) == label
    except ValueError:
        return False


def _valid_suffix(text: str) -> bool:
    """True if text could be a DNS suffix: non-empty labels without edge hyphens."""
    return bool(text) and all(label and label[0] != "-" and label[-1] != "-" for label in text.split("."))


def _suffix_typos(suffix: str) -> set[str]:
    """Suffixes one edit from suffix (ml, il for mil; gov.ua for gov.au), plus gov.uk -> uk."""
    out = {v for v in edits1(suffix, _SUFFIX_ALPHABET) if v != suffix and _valid_suffix(v)}
    if "." in suffix:
        out.add(suffix.split(".", 1)[1])
    return out


class TypoGuard:
    """Recognises query names that are typo-neighbours of protected domains, by key lookups only."""

    protected: frozenset[str]

    def __init__(self) -> None:
        self.protected = frozenset()
        self.policy: dict[str, str] = resolve_policy(None)
        self._exempt: frozenset[str] = frozenset()
        self._established: frozenset[str] = frozenset()
        self._domains: frozenset[str] = frozenset()  # protected domain entries (not suffixes)
        self._second_level: dict[str, frozenset[str]] = {}  # protected suffix entry -> known labels
        self._learned: dict[str, set[str]] = {}  # suffix entry -> labels learned from upstream answers
        self._learned_count = 0
        self._names: list[str] = []  # pid -> protected domain
        self._labels: list[str] = []  # pid -> its leftmost label (ASCII, or Unicode if IDN)
        self._edit: dict[str, dict[str, _Ids]] = {}  # suffix -> label and its deletions -> pids
        self._edit2: dict[str, dict[str, _Ids]] = {}  # suffix -> long label, its 1- and 2-deletions -> pids
        self._edit2_max: dict[str, int] = {}  # suffix -> longest label in _edit2 (+2: longer queries skip)
        self._numeral: dict[str, dict[str, int]] = {}  # suffix -> office3six5 -> pid
        self._loose: dict[str, dict[str, _Ids]] = {}  # suffix -> loose skeletons -> pids
        self._strong: dict[str, dict[str, _Ids]] = {}  # suffix -> strong skeleton -> pids (short labels)
        self._typo_suffix: dict[str, tuple[str, ...]] = {}  # ml -> (mil,)
        self._indexed_suffixes: frozenset[str] = frozenset()  # suffixes with edit/skeleton tables
        self._tables: dict[str, tuple] = {}  # suffix -> (edit, loose, strong) tables, one lookup per level
        self._join_rest: frozenset[str] = frozenset()  # what follows the first label of a protected name
        self._first_labels: frozenset[str] = frozenset()  # first labels of protected names
        self._psl_exceptions: frozenset[str] = frozenset()  # "!www.ck" -> www.ck
        self._psl_wild: frozenset[str] = frozenset()  # "*.ck" -> ck
        self._word_heads: frozenset[str] = frozenset()  # first two letters of each dictionary word
        self._word_tails: frozenset[str] = frozenset()  # last two letters
        self._combo: dict[str, tuple[str, str]] = {}  # armymil -> (army.mil, dot_omission)
        self._swap: dict[str, str] = {}  # label -> protected domain, for tld_swap and dictionary
        self._psl_rules: frozenset[str] = names.psl_rules()
        self._words: frozenset[str] = frozenset()
        self._word_ends: tuple[str, ...] = ()
        self._word_lengths: tuple[int, ...] = ()
        self.find_neighbour = self._find  # replaced by a cached version in build()

    @classmethod
    def build(
        cls,
        protected: Iterable[str],
        allow: Iterable[str] = (),
        *,
        class_policy: Mapping[str, str] | None = None,
        tld_second_level: Mapping[str, Iterable[str]] | None = None,
        learned: Mapping[str, Iterable[str]] | None = None,
        cache_size: int = 65536,
    ) -> TypoGuard:
        """Compile the index; ValueError on an invalid name, ConfigError on a bad class policy."""
        guard = cls()
        guard.policy = resolve_policy(class_policy)
        entries = sorted({names.normalise(p) for p in protected})
        allowed = {names.normalise(a) for a in allow}
        guard.protected = frozenset(entries)
        guard._exempt = frozenset(entries) | frozenset(allowed)
        guard._established = lists.established_domains() - guard.protected
        guard._words = lists.dictionary_words()
        guard._word_lengths = tuple(sorted({len(w) for w in guard._words}))
        guard._word_ends = tuple(sorted(guard._words))
        extra = {names.normalise(k): {names.normalise(v) for v in vs} for k, vs in (tld_second_level or {}).items()}

        suffixes: set[str] = set()
        domains = []
        loose_keys: list[tuple[str, int, str]] = []
        for entry in entries:
            if names.is_public_suffix(entry):
                known = set(extra.get(entry, ()))
                if entry == "mil":
                    known |= lists.mil_second_level()
                new = {label for label in (learned or {}).get(entry, ()) if label not in known}
                new = set(sorted(new)[:max(0, learned_mod.MAX_LEARNED - guard._learned_count)])
                if new:
                    guard._learned[entry] = new
                    guard._learned_count += len(new)
                guard._second_level[entry] = frozenset(known | new)
                suffixes.add(entry)
                if "." in entry:  # gov.uk: also the label gov under uk (gvo.uk, gov0.uk, govuk.com)
                    domains.append(entry)
            else:
                domains.append(entry)
        guard._domains = frozenset(domains)

        for pid, domain in enumerate(domains):
            label, suffix = domain.split(".", 1)
            text = skeleton.decode_label(label) if label.startswith("xn--") else label
            text = text or label
            guard._names.append(domain)
            guard._labels.append(text)
            folded = skeleton.fold(text)
            is_registrable = names.is_public_suffix(suffix)
            if is_registrable:
                suffixes.add(suffix)
            if not folded.isascii():
                _add(guard._strong.setdefault(suffix, {}), skeleton.strong(folded), pid)
            else:  # short and common-word labels too: established data keeps real look-alikes out
                loose_keys.append((suffix, pid, skeleton.loose(folded)))
            if text.isascii():  # every label gets edit neighbours; established data keeps real ones out
                guard._add_edits(text, suffix, pid)
            if is_registrable and folded.isascii():
                guard._swap.setdefault(text, domain)
            if text.isascii():
                guard._add_combos(label, suffix, domain)

        guard._add_skeletons(loose_keys)
        for suffix_entry, known in guard._second_level.items():
            for label in sorted(known):
                guard._add_combos(label, suffix_entry, f"{label}.{suffix_entry}")
        typo_suffix: dict[str, set[str]] = {}
        for suffix in sorted(suffixes):
            for typo in _suffix_typos(suffix):
                typo_suffix.setdefault(typo, set()).add(suffix)
        guard._typo_suffix = {k: tuple(sorted(v)) for k, v in typo_suffix.items()}
        guard._numeral = {s: t for s, t in guard._numeral.items() if t}
        guard._indexed_suffixes = frozenset(guard._edit) | frozenset(guard._loose) | frozenset(guard._strong)
        guard._tables = {s: (guard._edit.get(s), guard._loose.get(s), guard._strong.get(s), guard._edit2.get(s),
                             guard._edit2_max.get(s, 0) + 2, guard._numeral.get(s))
                         for s in guard._indexed_suffixes}  # fmt: skip
        guard._join_rest = frozenset(d.split(".", 1)[1] for d in guard._domains) | frozenset(guard._second_level)
        guard._first_labels = frozenset(d.split(".", 1)[0] for d in guard._domains).union(*guard._second_level.values())
        rules = guard._psl_rules
        guard._psl_exceptions = frozenset(r[1:] for r in rules if r.startswith("!"))
        guard._psl_wild = frozenset(r[2:] for r in rules if r.startswith("*."))
        guard._word_heads = frozenset(w[:2] for w in guard._words)
        guard._word_tails = frozenset(w[-2:] for w in guard._words)
        if cache_size > 0:
            guard.find_neighbour = functools.lru_cache(maxsize=cache_size)(guard._find)
        log.info("typo index built protected=%d suffix_entries=%d edit_keys=%d skeleton_keys=%d",
                 len(entries), len(guard._second_level), sum(map(len, guard._edit.values())),
                 sum(map(len, guard._loose.values())))
        return guard

    @property
    def learned_count(self) -> int:
        """How many second-level labels this guard learned (loaded or observed), for the metric."""
        return self._learned_count

    def learn(self, qname: str) -> tuple[str, str] | None:
        """Learn the second-level label of an answered name under a whole-suffix entry (mail.dmdc.mil).

        Returns (entry, label) when the label is new, else None. Cheap for every other name: one to three
        dictionary probes. Bounded: after MAX_LEARNED labels nothing more is learned.
        """
        if not self._second_level or not isinstance(qname, str) or self._learned_count >= learned_mod.MAX_LEARNED:
            return None
        labels = qname.lower().rstrip(".").split(".")
        for k in range(min(3, len(labels) - 1), 0, -1):
            entry = ".".join(labels[-k:])
            known = self._second_level.get(entry)
            if known is None:
                continue
            label = labels[-k - 1]
            if label in known or not _learnable(label) or names.is_public_suffix(label + "." + entry):
                return None
            self._second_level[entry] = known | {label}
            self._learned.setdefault(entry, set()).add(label)
            self._learned_count += 1
            self._add_combos(label, entry, f"{label}.{entry}")
            self._first_labels = self._first_labels | {label}
            clear = getattr(self.find_neighbour, "cache_clear", None)
            if clear is not None:  # earlier decisions about dmdc.ml are now stale
                clear()
            return entry, label
        return None

    def _add_edits(self, text: str, suffix: str, pid: int) -> None:
        """Index one ASCII label: its deletions (one edit), and for long labels two deletions."""
        table = self._edit.setdefault(suffix, {})
        deletions = {text[:i] + text[i + 1:] for i in range(len(text))}
        for key in (text, *sorted(deletions)):
            _add(table, key, pid)
        if len(text) >= TWO_EDIT_LENGTH:
            table2 = self._edit2.setdefault(suffix, {})
            self._edit2_max[suffix] = max(self._edit2_max.get(suffix, 0), len(text))
            keys = {text, *deletions, *map("".join, combinations(text, len(text) - 2))}
            for key in sorted(keys):
                _add(table2, key, pid)
        numeral = self._numeral.setdefault(suffix, {})
        for variant in sorted(numerals.variants(text)):
            numeral.setdefault(variant, pid)

    def _add_skeletons(self, keys: list[tuple[str, int, str]]) -> None:
        """Index each loose skeleton p with F(p) and F(F(p)), so a query looks up its own skeleton once.

        Look-alikes that change length (cl/d, lb/b, ...) reach a query skeleton q from p in up to two
        steps; storing every two-step forward rewrite at build time replaces the query's reverse
        rewrites. Three passes, so a key's first id is the closest look-alike (direct before rewritten).
        """
        rules = skeleton.FORWARD_RULES
        steps = [(suffix, pid, [loose]) for suffix, pid, loose in keys]
        for step in range(3):
            for suffix, pid, keys_now in steps:
                table = self._loose.setdefault(suffix, {})
                for key in keys_now:
                    _add(table, key, pid)
            if step < 2:
                steps = [(suffix, pid, [r for key in keys_now for r in skeleton.rewrites(key, rules)])
                         for suffix, pid, keys_now in steps]  # fmt: skip

    def _add_combos(self, label: str, suffix: str, domain: str) -> None:
        """Index armymil / army-mil / modgov style labels for domain."""
        parts = suffix.split(".")
        for k in range(1, len(parts) + 1):
            self._combo.setdefault(label + "".join(parts[:k]), (domain, "dot_omission"))
            self._combo.setdefault(label + "-" + "-".join(parts[:k]), (domain, "combo"))

    # --- query time: everything below is dictionary and set lookups --------------------------------

    def _find(self, qname: str) -> TypoMatch | None:
        """The neighbour match for qname, or None; never raises on text input."""
        if not isinstance(qname, str) or not qname or len(qname) > 1024:
            return None
        name = qname.lower()
        if name[-1] == ".":
            name = name[:-1]
        labels = name.split(".")
        n = len(labels)
        exempt = self._exempt
        parents = [""] * n
        acc = labels[-1]
        parents[-1] = acc
        if acc in exempt:
            return None
        for i in range(n - 2, -1, -1):  # the name and its parents; a protected or allowed one ends it
            acc = labels[i] + "." + acc
            if acc in exempt:
                return None
            parents[i] = acc
        low = max(0, n - MAX_LEVELS)
        ps = n - 1  # index of the first label of the public suffix; any single label is one
        rules, wild = self._psl_rules, self._psl_wild
        for i in range(n - 2, low - 1, -1):
            parent = parents[i]
            if parent in self._psl_exceptions or not (parent in rules or parent in wild or parents[i + 1] in wild):
                break
            ps = i
        if n > 2:  # exact reconstructions first: proto.nmail.com is protonmail.com, not nmail.com
            found = self._across(labels, parents, low, ps)
            if found is not None:
                return self._match(qname, *found)
        indexed, typo_suffix, combo = self._indexed_suffixes, self._typo_suffix, self._combo
        for i in range(min(n - 2, ps - 1), low - 1, -1):  # a public suffix (gov.ua) cannot be registered
            suffix = parents[i + 1]
            if i != ps - 1 and suffix not in indexed and suffix not in typo_suffix and labels[i] not in combo:
                continue  # nothing can match at this level: skip the call
            if parents[i] in self._established:
                continue
            found = self._level(labels[i], suffix, i == ps - 1)
            if found is not None:
                return self._match(qname, parents[i], *found)
        return None

    def _match(self, qname: str, neighbour: str, protected: str, typo_class: str, distance: int) -> TypoMatch:
        """Wrap a hit with its class policy, and say whether its label was learned."""
        learned = False
        if self._learned:
            label, _, entry = protected.partition(".")
            learned = label in self._learned.get(entry, ())
        return TypoMatch(qname, neighbour, protected, typo_class, distance, self.policy[typo_class], learned)

    def _level(self, label: str, suffix: str, registrable: bool) -> tuple[str, str, int] | None:
        """Match one level label.suffix: TLD typo, label edits, look-alikes, combos, swaps."""
        if not label:  # "x..com" is not a DNS name; an empty label resembles nothing
            return None
        protected_suffixes = self._typo_suffix.get(suffix)
        if protected_suffixes is not None:
            looks = skeleton.strong(label)  # m0d.uk: a look-alike of mod under a typo of gov.uk
            for protected_suffix in protected_suffixes:
                known = self._second_level.get(protected_suffix, ())
                for text in (label, looks) if looks != label else (label,):
                    candidate = text + "." + protected_suffix
                    if candidate in self._domains or text in known:
                        distance = Levenshtein.distance(suffix, protected_suffix) + (text != label)
                        return candidate, "tld_typo", distance
        if label.startswith("xn--"):
            return self._idn(label, suffix)
        tables = self._tables.get(suffix)
        if tables is not None:
            edit, loose, strong, edit2, edit2_max, numeral = tables
            keys = list(map("".join, combinations(label, len(label) - 1)))  # C loops: ~30% faster
            keys.append(label)
            if edit is not None:
                # symmetric deletion: the label and its deletions meet a protected label or its deletions
                if not edit.keys().isdisjoint(keys) or "es" in label:
                    found = self._edits(label, keys, edit)
                    if found is not None:
                        return found
            if loose is not None:
                value = loose.get(skeleton.loose(label))  # the index holds one- and two-step rewrites
                if value is not None:
                    pid = value if isinstance(value, int) else value[0]
                    return self._names[pid], "homoglyph", Levenshtein.distance(label, self._labels[pid])
            if strong is not None:
                value = strong.get(skeleton.strong(label))
                if value is not None:
                    pid = value if isinstance(value, int) else value[0]
                    return self._names[pid], "homoglyph", Levenshtein.distance(label, self._labels[pid])
            if numeral is not None:
                pid = numeral.get(label)
                if pid is not None:
                    return self._names[pid], "numeral", Levenshtein.distance(label, self._labels[pid])
            if edit2 is not None and TWO_EDIT_LENGTH - 2 <= len(label) <= edit2_max:
                found = self._two_edits(label, keys, edit2)
                if found is not None:
                    return found
        hit = self._combo.get(label)
        if hit is None and label.startswith("www") and len(label) > 4:  # wwwarmymil.com, wwwgmail.com
            rest = label[4:] if label[3] == "-" else label[3:]
            hit = self._combo.get(rest)
            if hit is None and rest + "." + suffix in self._domains:
                hit = rest + "." + suffix, "dot_omission"
        if hit is not None:
            domain, typo_class = hit
            return domain, typo_class, Levenshtein.distance(label + "." + suffix, domain)
        if registrable:
            return self._swap_or_word(label, suffix)
        return None

    def _edits(self, label: str, keys: list[str], table: dict[str, _Ids]) -> tuple[str, str, int] | None:
        """One-edit neighbours through the symmetric deletion index (keys: label's deletions and itself)."""
        pids = {pid for value in map(table.get, keys) if value is not None for pid in _ids(value)}
        best = None
        for pid in pids:
            typo_class = classify_edit(label, self._labels[pid])
            if typo_class is not None:
                rank = (_CLASS_RANK[typo_class], self._names[pid])
                if best is None or rank < best[0]:
                    best = rank, (self._names[pid], typo_class, 1)
        if best is not None:
            return best[1]
        start = label.find("es", 3)
        while start != -1:  # plural with "es" after s, x or z: protonsmail -> protonsesmail
            if label[start - 1] in "sxz":
                for pid in _ids(table.get(label[:start] + label[start + 2:])):
                    if self._labels[pid] == label[:start] + label[start + 2:]:
                        return self._names[pid], "plural", 2
            start = label.find("es", start + 1)
        return None

    def _two_edits(self, label: str, keys: list[str], table: dict[str, _Ids]) -> tuple[str, str, int] | None:
        """Two-edit neighbours of long labels: the label, its 1- and 2-deletions meet the protected ones.

        The index holds each long label with its 1- and 2-deletions. The query's own 2-deletions can only
        meet them when it is at least as long as a long label (8+); shorter queries probe their 1-deletions.
        """
        index = table.keys()
        if len(label) < TWO_EDIT_LENGTH:
            if index.isdisjoint(keys):
                return None
            keys2 = keys
        else:
            deletions2 = map("".join, combinations(label, len(label) - 2))  # consumed lazily: stops at a hit
            if index.isdisjoint(keys) and index.isdisjoint(deletions2):
                return None
            keys2 = [*keys, *map("".join, combinations(label, len(label) - 2))]
        pids = {pid for value in map(table.get, keys2) if value is not None for pid in _ids(value)}
        best = None
        for pid in pids:
            distance = DamerauLevenshtein.distance(label, self._labels[pid], score_cutoff=2)
            if distance <= 2 and (best is None or (distance, self._names[pid]) < best[:2]):
                best = distance, self._names[pid]
        return None if best is None else (best[1], "two_edits", best[0])

    def _idn(self, label: str, suffix: str) -> tuple[str, str, int] | None:
        """An xn-- label whose confusable skeleton equals a protected one."""
        tables = self._tables.get(suffix)
        if tables is None:
            return None
        text = skeleton.decode_label(label)
        if text is None:
            return None
        folded = skeleton.fold(text)
        if not folded.isascii():
            return None
        loose, strong = tables[1], tables[2]
        if loose is not None:
            value = loose.get(skeleton.loose(folded))
            if value is not None:
                pid = value if isinstance(value, int) else value[0]
                return self._names[pid], "idn_homoglyph", Levenshtein.distance(text, self._labels[pid])
        if strong is not None:
            value = strong.get(skeleton.strong(folded))
            if value is not None:
                pid = value if isinstance(value, int) else value[0]
                return self._names[pid], "idn_homoglyph", Levenshtein.distance(text, self._labels[pid])
        return None

    def _swap_or_word(self, label: str, suffix: str) -> tuple[str, str, int] | None:
        """At the registrable level: the same label under another TLD, or label plus a common word."""
        swap = self._swap
        domain = swap.get(label)
        if domain is not None:
            return domain, "tld_swap", Levenshtein.distance(suffix, domain.split(".", 1)[1])
        if "-" in label:
            for part in label.split("-"):
                if part in swap:
                    return swap[part], "dictionary", len(label) - len(part)
            return None
        if label[-2:] not in self._word_tails and label[:2] not in self._word_heads:
            return None  # neither ends nor starts like a dictionary word
        words = self._words
        size = len(label)
        for k in self._word_lengths:
            if k > size - MIN_GLUED_LABEL:
                break
            if label[-k:] in words and label[:-k] in swap:
                return swap[label[:-k]], "dictionary", k
            if label[:k] in words and label[k:] in swap:
                return swap[label[k:]], "dictionary", k
        return None

    def _across(self, labels: list[str], parents: list[str], low: int, ps: int) -> tuple[str, str, str, int] | None:
        """Matches that span labels: dot insertion (ar.my.mil) and a protected name inside (army.mil.com)."""
        n = len(labels)
        join_rest, domains, second_level = self._join_rest, self._domains, self._second_level
        for i in range(low, n - 2):  # ar.my | mil: labels[i:j] joined, then what follows a protected label
            for j in range(i + 2, min(i + MAX_JOINED_LABELS, n - 1) + 1):
                rest = parents[j]
                if rest in join_rest:  # a set lookup before any string is built
                    joined = "".join(labels[i:j])
                    if joined + "." + rest in domains or joined in second_level.get(rest, ()):
                        return parents[i], joined + "." + rest, "dot_insertion", j - i - 1
        first_labels = self._first_labels
        for i in range(low, ps - 1):  # army | mil | com: a protected name followed by more labels
            if labels[i] not in first_labels:
                continue
            for j in range(i + 2, min(i + 5, ps) + 1):
                inner = ".".join(labels[i + 1:j])
                candidate = labels[i] + "." + inner
                if candidate in self._domains or labels[i] in self._second_level.get(inner, ()):
                    return parents[i], candidate, "combo", len(parents[i]) - len(candidate)
        return None
