"""TypoGuard: a compiled neighbour index (hash maps and a deletion index) and the per-query lookup."""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Iterable, Mapping

from rapidfuzz.distance import Levenshtein

from resolverguard import names
from resolverguard.codes import TypoClass
from resolverguard.typo import learned as learned_mod
from resolverguard.typo import lists, skeleton
from resolverguard.typo.classify import edits1
from resolverguard.typo.edits import OneEdit
from resolverguard.typo.families import LABEL_FAMILIES
from resolverguard.typo.family import HashSet, LabelFamily, deletions1
from resolverguard.typo.match import TypoMatch, resolve_policy
from resolverguard.typo.twoedits import TWO_EDIT_LENGTH  # noqa: F401 - re-exported for callers

log = logging.getLogger(__name__)

MAX_LEVELS = 10  # only the rightmost labels of a query are matched: protected names are shallow
MIN_GLUED_LABEL = 3  # rtxsecure.com: the protected part of a label glued to a dictionary word
# Suffixes only governments, armed forces and schools can register under (gov.au, mil.za, gouv.fr,
# go.jp, edu.au; and gov, mil, edu, int): a swap into one is a foreign government, not a squatter.
RESTRICTED_FIRST_LABELS = frozenset(
    {
        "gov",
        "mil",
        "govt",
        "gouv",
        "gob",
        "go",
        "gv",
        "gc",
        "mod",
        "edu",
        "army",
        "navy",
        "airforce",
        "police",
        "parliament",
        "government",
    }
)
RESTRICTED_TLDS = frozenset({"gov", "mil", "edu", "int"})
# Host words: mail.dk, smtp.com.ar, www.ie are real hosts' registrable names, not a swap of mail.mil.
HOST_WORDS = frozenset({"mail", "email", "smtp", "mx", "www", "imap", "pop", "pop3", "webmail", "mx1", "mx2"})
GLUED_WORDS = ("www", "mail", "smtp", "imap", "webmail", "email", "mx", "pop")
GLUED_HEADS = frozenset(w[:2] for w in GLUED_WORDS)
MIN_DOUBLE_TYPO_LABEL = 5  # gmial.co: a label typo plus a suffix typo only for labels of 5+ characters
GOVERNMENT_LABELS = frozenset({"gov", "govt", "gouv", "gob", "go", "gv", "gc"})  # gov.nl is the Netherlands'
MAX_JOINED_LABELS = 3  # dot insertion: ar.my.mil, a.r.my.mil
_SUFFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-."


@functools.cache
def restricted_suffixes() -> frozenset[str]:
    """gov, mil, edu, int and every PSL suffix only a government, armed force or school registers under
    (gov.uk, gc.ca, gov.au, mil.za, ...), and the US states' own namespaces (nj.us: state.nj.us is New
    Jersey's, not state.gov's)."""
    return RESTRICTED_TLDS | frozenset(
        r
        for r in names.psl_rules()
        if "." in r
        and r[0] not in "*!"
        and (r.split(".", 1)[0] in RESTRICTED_FIRST_LABELS or (r.endswith(".us") and len(r) == 5))
    )


def swap_blocks(label: str, suffix: str) -> bool:
    """Namespace-aware suffix swap: only a protected name under a restricted suffix (army.mil,
    mod.gov.uk, nato.int) is imitated by its label under an open suffix (army.ml is not the army's).
    A brand under an open suffix (yahoo.com) usually owns yahoo.lt, paypal.fr, ...: not reported
    without ownership evidence. Host words (mail.dk for mail.mil) and government labels (gov.nl for
    gov.uk) are never a swap."""
    if label in HOST_WORDS or label in GOVERNMENT_LABELS:
        return False
    return suffix in restricted_suffixes()


def _learnable(label: str) -> bool:
    """True for an LDH label a registry could have delegated (not _dmarc, not a wildcard, not empty)."""
    try:
        return names.normalise(label) == label
    except ValueError:
        return False


def _valid_suffix(text: str) -> bool:
    """True if text could be a DNS suffix: non-empty labels without edge hyphens."""
    return bool(text) and all(label and label[0] != "-" and label[-1] != "-" for label in text.split("."))


def suffix_typos(suffix: str) -> set[str]:
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
        self._compiled = False  # the compiled prefilters (typo/_probe.c) are in use
        self._families: list[LabelFamily] = []  # the label-level families (typo/families.py), in match order
        self._typo_suffix: dict[str, tuple[str, ...]] = {}  # ml -> (mil,)
        self._indexed_suffixes: frozenset[str] = frozenset()  # suffixes with a label-family table
        self._tables: dict[str, tuple] = {}  # suffix -> ((family, its table), ...), one lookup per level
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
        self._restricted: frozenset[str] = frozenset()  # gov.au, mil.za, ...: no tld_swap or dictionary
        self._private: frozenset[str] = names.private_suffixes()  # gov.scot, blogspot.com: never neighbours
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
        compiled: bool = True,
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
        guard._compiled = HashSet is not None and compiled
        families = guard._families = [family(guard._compiled) for family in LABEL_FAMILIES]
        for entry in entries:
            if names.is_public_suffix(entry):
                known = set(extra.get(entry, ()))
                if entry == "mil":
                    known |= lists.mil_second_level()
                new = {label for label in (learned or {}).get(entry, ()) if label not in known}
                new = set(sorted(new)[: max(0, learned_mod.MAX_LEARNED - guard._learned_count)])
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
            for family in families:  # every label, short and common words too: established data keeps
                family.add(pid, text, folded, suffix)  # the real neighbours out
            if is_registrable and folded.isascii():
                guard._swap.setdefault(text, domain)
            if text.isascii():
                guard._add_combos(label, suffix, domain)

        for family in families:
            family.finish()
        for suffix_entry, known in guard._second_level.items():
            for label in sorted(known):
                guard._add_combos(label, suffix_entry, f"{label}.{suffix_entry}")
        typo_suffix: dict[str, set[str]] = {}
        for suffix in sorted(suffixes):
            for typo in suffix_typos(suffix):
                typo_suffix.setdefault(typo, set()).add(suffix)
        guard._typo_suffix = {k: tuple(sorted(v)) for k, v in typo_suffix.items()}
        guard._indexed_suffixes = frozenset().union(*(family.tables for family in families))
        guard._tables = {s: tuple((f, f.tables[s]) for f in families if s in f.tables) for s in guard._indexed_suffixes}
        guard._join_rest = frozenset(d.split(".", 1)[1] for d in guard._domains) | frozenset(guard._second_level)
        guard._first_labels = frozenset(d.split(".", 1)[0] for d in guard._domains).union(*guard._second_level.values())
        rules = guard._psl_rules
        guard._psl_exceptions = frozenset(r[1:] for r in rules if r.startswith("!"))
        guard._psl_wild = frozenset(r[2:] for r in rules if r.startswith("*."))
        guard._restricted = restricted_suffixes()
        guard._word_heads = frozenset(w[:2] for w in guard._words)
        guard._word_tails = frozenset(w[-2:] for w in guard._words)
        if cache_size > 0:
            guard.find_neighbour = functools.lru_cache(maxsize=cache_size)(guard._find)
        log.info(
            "typo index built protected=%d suffix_entries=%d families=%s",
            len(entries),
            len(guard._second_level),
            ",".join(type(f).__name__ for f in families),
        )
        return guard

    @property
    def learned_count(self) -> int:
        """How many second-level labels this guard learned (loaded or observed), for the metric."""
        return self._learned_count

    def learn(self, qname: str) -> tuple[TypoGuard, str, str] | None:
        """Learn the second-level label of an answered name under a whole-suffix entry (mail.dmdc.mil).

        Returns (a new guard that knows the label, entry, label) when the label is new, else None. This guard
        is never changed: it is an immutable snapshot that other threads (the SMTP sink, the export builder)
        may be reading; the new one shares everything but the few structures a label adds to. Cheap for
        every other name: one to three dictionary probes. Bounded: after MAX_LEARNED labels nothing more.
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
            new = copy.copy(self)
            new._second_level = {**self._second_level, entry: known | {label}}
            new._learned = {**self._learned, entry: frozenset(self._learned.get(entry, ())) | {label}}
            new._learned_count = self._learned_count + 1
            new._combo = dict(self._combo)
            new._add_combos(label, entry, f"{label}.{entry}")
            new._first_labels = self._first_labels | {label}
            cached = getattr(self.find_neighbour, "cache_info", None)  # its own cache: dmdc.ml decided anew
            new.find_neighbour = functools.lru_cache(maxsize=cached().maxsize)(new._find) if cached else new._find
            return new, entry, label
        return None

    def _add_combos(self, label: str, suffix: str, domain: str) -> None:
        """Index armymil / army-mil / modgov style labels for domain."""
        parts = suffix.split(".")
        for k in range(1, len(parts) + 1):
            self._combo.setdefault(label + "".join(parts[:k]), (domain, TypoClass.DOT_OMISSION))
            self._combo.setdefault(label + "-" + "-".join(parts[:k]), (domain, TypoClass.COMBO))

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
            if parents[i] in self._established or parents[i] in self._private:
                continue  # a real domain, or a private-section public suffix (gov.scot, blogspot.com)
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
                        return candidate, TypoClass.TLD_TYPO, distance
            if len(label) >= MIN_DOUBLE_TYPO_LABEL - 1 and suffix not in self._indexed_suffixes:
                for protected_suffix in protected_suffixes:  # gmial.co: a label typo under a suffix typo
                    found = self._families_match(label, protected_suffix)
                    if found is not None:
                        return found[0], TypoClass.TLD_TYPO, found[2] + Levenshtein.distance(suffix, protected_suffix)
        if label.startswith("xn--"):
            return self._idn(label, suffix)
        tables = self._tables.get(suffix)
        if tables is not None:
            keys = None if self._compiled else deletions1(label)  # with the prefilters: built on demand
            labels = self._labels
            for family, table in tables:
                hit = family.match(table, label, keys, labels)
                if hit is not None:
                    return self._names[hit[0]], hit[1], hit[2]
        hit = self._combo.get(label)
        if hit is None and label[:2] in GLUED_HEADS:  # wwwgmail.com, mailgmail.com, smtp-gmail.com
            hit = self._glued_host_word(label, suffix)
        if hit is not None:
            domain, typo_class = hit
            return domain, typo_class, Levenshtein.distance(label + "." + suffix, domain)
        if registrable:
            return self._swap_or_word(label, suffix)
        return None

    def _glued_host_word(self, label: str, suffix: str) -> tuple[str, str] | None:
        """A host word glued before a protected label (wwwarmymil.com, mailgmail.com, smtp-gmail.com):
        for an MTA the same mistake as a dropped dot."""
        for word in GLUED_WORDS:
            if label.startswith(word) and len(label) > len(word) + 1:
                rest = label[len(word) + 1 :] if label[len(word)] == "-" else label[len(word) :]
                hit = self._combo.get(rest)
                if hit is None and rest + "." + suffix in self._domains:
                    hit = rest + "." + suffix, TypoClass.DOT_OMISSION
                if hit is not None:
                    return hit
        return None

    def _families_match(self, label: str, suffix: str) -> tuple[str, str, int] | None:
        """The first label-family hit of ASCII label under suffix's tables (pure-Python keys), or None."""
        tables = self._tables.get(suffix)
        if tables is None:
            return None
        keys = deletions1(label)
        for family, table in tables:
            hit = family.match(table, label, keys, self._labels)
            if hit is None or hit[1] == TypoClass.TWO_EDITS:  # two slips plus a suffix slip: too far
                continue
            text = self._labels[hit[0]]
            if len(text) >= MIN_DOUBLE_TYPO_LABEL and text not in HOST_WORDS:  # not 6mail.ml for mail.mil
                return self._names[hit[0]], hit[1], hit[2]
        return None

    def _idn(self, label: str, suffix: str) -> tuple[str, str, int] | None:
        """An xn-- label whose confusable skeleton equals a protected one."""
        tables = self._tables.get(suffix)
        if tables is None:
            return None
        text = skeleton.decode_label(label)
        if text is None:
            return None
        folded = skeleton.fold(text)
        for family, table in tables:
            hit = family.match_idn(table, text, folded, self._labels)
            if hit is not None:
                return self._names[hit[0]], hit[1], hit[2]
        if sum(not c.isascii() for c in folded) == 1:  # amazoп.com: one glyph no table folds
            for family, table in tables:
                if isinstance(family, OneEdit):
                    hit = family.match(table, folded, deletions1(folded), self._labels)
                    if hit is not None and hit[1] == TypoClass.REPLACEMENT:
                        return self._names[hit[0]], TypoClass.IDN_HOMOGLYPH, 1
        return None

    def _swap_or_word(self, label: str, suffix: str) -> tuple[str, str, int] | None:
        """At the registrable level: the same label under another TLD, or label plus a common word; not
        into another restricted suffix (army.gov.au, army.mil.za: foreign governments register there)."""
        found = self._swap_or_word_anywhere(label, suffix)
        if found is None:
            return None
        if suffix in self._restricted and not found[0].endswith("." + suffix):
            return None
        if found[1] == TypoClass.TLD_SWAP and not swap_blocks(label, found[0].split(".", 1)[1]):
            return None
        return found

    def _swap_or_word_anywhere(self, label: str, suffix: str) -> tuple[str, str, int] | None:
        """The same label under another TLD, or label plus a common word, whatever the suffix."""
        swap = self._swap
        domain = swap.get(label)
        if domain is not None:
            return domain, TypoClass.TLD_SWAP, Levenshtein.distance(suffix, domain.split(".", 1)[1])
        if "-" in label:
            for part in label.split("-"):
                if part in swap:
                    return swap[part], TypoClass.DICTIONARY, len(label) - len(part)
            return None
        if label[-2:] not in self._word_tails and label[:2] not in self._word_heads:
            return None  # neither ends nor starts like a dictionary word
        words = self._words
        size = len(label)
        for k in self._word_lengths:
            if k > size - MIN_GLUED_LABEL:
                break
            if label[-k:] in words and label[:-k] in swap:
                return swap[label[:-k]], TypoClass.DICTIONARY, k
            if label[:k] in words and label[k:] in swap:
                return swap[label[k:]], TypoClass.DICTIONARY, k
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
                        return parents[i], joined + "." + rest, TypoClass.DOT_INSERTION, j - i - 1
        first_labels = self._first_labels
        for i in range(low, ps - 1):  # army | mil | com: a protected name followed by more labels
            if labels[i] not in first_labels:
                continue
            for j in range(i + 2, min(i + 5, ps) + 1):
                inner = ".".join(labels[i + 1 : j])
                candidate = labels[i] + "." + inner
                if candidate in self._domains or labels[i] in self._second_level.get(inner, ()):
                    return parents[i], candidate, TypoClass.COMBO, len(parents[i]) - len(candidate)
        return None
