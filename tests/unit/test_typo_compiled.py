"""The compiled prefilter (typo/_probe.c) against the pure-Python path: same answers, both tested.

Locally a missing build skips the compiled half; in CI (CI=true) it fails, like tests/realprog.py.
"""

from __future__ import annotations

import os
import random
from itertools import combinations

import pytest

from resolverguard.typo import TypoGuard, neighbours
from resolverguard.typo.family import HashSet, deletions1

PROTECTED = [
    "raytheon.com",
    "lockheedmartin.com",
    "protonmail.com",
    "northropgrumman.com",
    "gmail.com",
    "aol.com",
    "mod.gov.uk",
    "gov.uk",
    "army.mil",
    "mil",
    "office365.com",
    "barclays.co.uk",
    "bundeswehr.de",
]


def _require_compiled() -> None:
    if HashSet is None:
        if os.environ.get("CI") == "true":
            pytest.fail("resolverguard/typo/_probe.c was not built (setup.py); CI must test the compiled path")
        pytest.skip("the compiled prefilter is not built here")


def _deletions(label: str, depth: int) -> set[str]:
    out = set(deletions1(label))
    if depth >= 2:
        out |= set(map("".join, combinations(label, len(label) - 2)))
    return out


def test_hash_set_never_says_no_when_python_says_yes() -> None:
    _require_compiled()
    rng = random.Random(5)
    alphabet = "abcdeilmnorst0123-"
    keys = {"".join(rng.choice(alphabet) for _ in range(rng.randint(4, 9))) for _ in range(3000)}
    quick = HashSet(sorted(keys))
    assert len(quick) == len(keys)
    for _ in range(3000):
        label = "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 12)))
        for depth in (1, 2):
            if not keys.isdisjoint(_deletions(label, depth)):  # a "maybe" may be wrong, a "no" never
                assert quick.any_deletions(label, depth), (label, depth)
    with pytest.raises(TypeError):
        HashSet([b"bytes"])


def test_compiled_and_pure_python_guards_decide_the_same() -> None:
    _require_compiled()
    fast = TypoGuard.build(PROTECTED, cache_size=0)
    pure = TypoGuard.build(PROTECTED, cache_size=0, compiled=False)
    assert fast._compiled and not pure._compiled
    rng = random.Random(7)
    names = [n for d in PROTECTED for v in neighbours(d).values() for n in v]
    names += [
        "".join(rng.choice("abcdefghilmnoprstuy") for _ in range(rng.randint(3, 16))) + ".com" for _ in range(3000)
    ]
    names += ["raythneo.com", "protonma22.com", "rbclays.co.uk", "northropgruman.com", "mail.lockhedmatin.com"]
    differ = [n for n in names if fast.find_neighbour(n) != pure.find_neighbour(n)]
    assert not differ, differ[:10]
    assert fast.find_neighbour("raythneo.com").typo_class == "two_edits"
