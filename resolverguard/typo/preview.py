"""The operator preview (`resolverguard neighbours DOMAIN --real`): real domains near a protected entry,
each with the guard's verdict and the reason, so an operator can review before enabling the guard."""

from __future__ import annotations

from dataclasses import dataclass

from rapidfuzz.distance import DamerauLevenshtein

from resolverguard import names
from resolverguard.typo import lists
from resolverguard.typo.index import TypoGuard
from resolverguard.typo.twoedits import TWO_EDIT_LENGTH


@dataclass(frozen=True)
class RealNeighbour:
    """One real domain near a protected entry and what the guard does with it."""

    domain: str
    verdict: str  # "allowed" | "would-block" | "log-only"
    reason: str  # the class that matched, or why nothing blocks it

    def line(self) -> str:
        """One tab-separated line for the text output."""
        return f"{self.verdict}\t{self.domain}\t{self.reason}"


def _near(label: str, suffix: str, domain: str) -> bool:
    """Same label under another suffix, or the same suffix and within the guard's edit budget."""
    other_label, _, other_suffix = domain.partition(".")
    if other_label == label:
        return other_suffix != suffix
    if other_suffix != suffix or abs(len(other_label) - len(label)) > 2:
        return False
    budget = 2 if len(label) >= TWO_EDIT_LENGTH else 1
    return DamerauLevenshtein.distance(other_label, label, score_cutoff=budget) <= budget or label in other_label


def real_neighbours(domain: str) -> list[RealNeighbour]:
    """Real registrable domains (the shipped established data) near domain, sorted, with verdicts."""
    domain = names.normalise(domain)
    if "." not in domain:
        return []
    label, suffix = domain.split(".", 1)
    guard = TypoGuard.build([domain], cache_size=0)
    bare = TypoGuard.build([domain], cache_size=0)
    bare._established = frozenset()  # what the rules alone decide, without the established data
    out = []
    for real in sorted(lists.established_domains()):
        if real == domain or names.registrable(real) != real or not _near(label, suffix, real):
            continue
        match = guard.find_neighbour(real)
        if match is not None:
            verdict = "would-block" if match.blocks else "log-only"
            out.append(RealNeighbour(real, verdict, f"{match.typo_class} of {match.protected}"))
            continue
        without = bare.find_neighbour(real)
        if without is not None:
            reason = f"established data ({lists.established_provenance()}); else {without.typo_class}"
        else:
            reason = "no rule matches (namespace-aware swap, precision rules)"
        out.append(RealNeighbour(real, "allowed", reason))
    return out
