"""The unit a label-level typo family implements, and the id tables the families share.

A family indexes protected labels per suffix at build time, matches one query label against its table
at query time, and enumerates the variants of a label for `neighbours` (the RPZ export): matcher and
generator side by side. The registry (typo/families.py) lists the families in match order.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

try:  # the compiled prefilter (typo/_probe.c, built by setup.py when a C compiler is there)
    from resolverguard.typo._probe import HashSet
except ImportError:  # pragma: no cover - every family's pure-Python path is complete without it
    HashSet = None

Ids = int | tuple[int, ...]
Hit = tuple[int, str, int]  # protected id, typo class, distance


def add_id(table: dict[str, Ids], key: str, pid: int) -> None:
    """Record pid under key; a key shared by several protected names holds a tuple."""
    old = table.get(key)
    if old is None:
        table[key] = pid
    elif isinstance(old, int):
        if old != pid:
            table[key] = (old, pid)
    elif pid not in old:
        table[key] = old + (pid,)


def ids(value: Ids | None) -> tuple[int, ...]:
    """The protected ids stored under one key."""
    if value is None:
        return ()
    return (value,) if isinstance(value, int) else value


def deletions1(label: str) -> list[str]:
    """The label's 1-deletions and the label itself (the query side of a symmetric deletion index)."""
    keys = list(map("".join, combinations(label, len(label) - 1)))  # C loops: ~30% faster than slicing
    keys.append(label)
    return keys


def prefilter(keys: Any, compiled: bool) -> Any:
    """The compiled hash prefilter of an index's keys, or None (not built, or turned off)."""
    return HashSet(list(keys)) if compiled and HashSet is not None else None


def first_id(value: Ids) -> int:
    """The first (closest) id stored under one key."""
    return value if isinstance(value, int) else value[0]


class LabelFamily:
    """One family of label edits (omission, look-alikes, ...): build, match, enumerate."""

    classes: tuple[str, ...] = ()

    def __init__(self, compiled: bool = True) -> None:
        self.tables: dict[str, Any] = {}  # suffix -> this family's table
        self.compiled = compiled  # use the compiled prefilter where the family has one and it is built

    def add(self, pid: int, text: str, folded: str, suffix: str) -> None:
        """Index protected label text (Unicode if IDN; folded: its ASCII fold) under suffix as pid."""

    def finish(self) -> None:
        """Called once after every label was added."""

    def match(self, table: Any, label: str, keys: list[str] | None, labels: list[str]) -> Hit | None:
        """Match ASCII query label against this family's table (keys: deletions1(label), or None if no
        family has built them yet)."""
        return None

    def match_idn(self, table: Any, text: str, folded: str, labels: list[str]) -> Hit | None:
        """Match a decoded xn-- query label (text, and its ASCII fold) against this family's table."""
        return None

    def variants(self, label: str) -> dict[str, set[str]]:
        """The variants of an ASCII label this family matches, by class (for `neighbours`)."""
        return {}
