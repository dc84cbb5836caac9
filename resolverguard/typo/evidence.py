"""DNS ownership evidence for a swapped-suffix or combo hit under an open suffix (issue 22 item 3), pure.

The guard is a resolver: before it blocks `paypal.fr` as a swap of a protected `paypal.com` it may look
the name up and compare it with the protected domain. Only the delegation counts as ownership:

* NXDOMAIN: the name does not exist, blocking costs nothing -> BLOCK;
* the name resolves and its NS set is the protected domain's own (the identical set, or every NS host
  under the protected registrable domain: `ns1.paypal.com`) -> OWNED, allowed;
* anything else -> UNOWNED, blocked. Shared hosting is not ownership: the same MX (Google, Microsoft
  365) or web host serves many customers, squatters too, so MX and A records never count.

Verdicts live in a bounded TTL cache outside the policy snapshot, so a reload keeps them. The driver that
asks the upstreams is not wired yet (docs/typo.md, "DNS ownership evidence").
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from resolverguard import names

METRIC = "resolverguard_typo_evidence_total"  # {verdict=...}, one series per EvidenceVerdict
DEFAULT_TTL = 3600.0
DEFAULT_MAX_ENTRIES = 10_000


class EvidenceVerdict(StrEnum):
    """The `verdict` label values of resolverguard_typo_evidence_total."""

    NXDOMAIN = "nxdomain"  # the name does not exist: block
    OWNED = "owned"  # same delegation as the protected domain and it resolves: the brand's own, allow
    UNOWNED = "unowned"  # exists under someone else's nameservers: block
    UNKNOWN = "unknown"  # no answer within the upstream timeout: decided on the data alone


@dataclass(frozen=True)
class Observation:
    """What the upstreams said about the candidate name and the protected domain."""

    nxdomain: bool
    resolves: bool  # NOERROR with data for the name (A, AAAA or MX)
    name_ns: frozenset[str]  # the NS set of the candidate's registrable domain
    protected_ns: frozenset[str]  # the NS set of the protected domain
    timed_out: bool = False


def _normal(hosts: Iterable[str]) -> frozenset[str]:
    return frozenset(h.lower().rstrip(".") for h in hosts if h)


def verdict(protected: str, observation: Observation) -> EvidenceVerdict:
    """The evidence verdict for a candidate of protected, from what the upstreams answered."""
    if observation.timed_out:
        return EvidenceVerdict.UNKNOWN
    if observation.nxdomain:
        return EvidenceVerdict.NXDOMAIN
    name_ns, own_ns = _normal(observation.name_ns), _normal(observation.protected_ns)
    base = names.registrable(protected) or protected
    under_protected = bool(name_ns) and all(h == base or h.endswith("." + base) for h in name_ns)
    if observation.resolves and name_ns and (name_ns == own_ns or under_protected):
        return EvidenceVerdict.OWNED
    return EvidenceVerdict.UNOWNED


def blocks(found: EvidenceVerdict, data_blocks: bool) -> bool:
    """Whether a hit blocks given its evidence; UNKNOWN (first lookup, timeout) keeps the data's answer."""
    if found is EvidenceVerdict.UNKNOWN:
        return data_blocks
    return found is not EvidenceVerdict.OWNED


class EvidenceCache:
    """name -> verdict with a TTL, at most max_entries (least recently used dropped first)."""

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries, self.ttl, self._clock = max(1, max_entries), ttl, clock
        self._entries: OrderedDict[str, tuple[float, EvidenceVerdict]] = OrderedDict()
        self.counts = {v: 0 for v in EvidenceVerdict}  # pre-declared at 0, for the metric

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> EvidenceVerdict | None:
        """The cached verdict, or None when absent or expired."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[name]
            return None
        self._entries.move_to_end(name)
        return entry[1]

    def put(self, name: str, found: EvidenceVerdict) -> None:
        """Record a verdict (UNKNOWN is counted, not cached: the next lookup asks again)."""
        self.counts[found] += 1
        if found is EvidenceVerdict.UNKNOWN:
            return
        self._entries[name] = (self._clock() + self.ttl, found)
        self._entries.move_to_end(name)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
