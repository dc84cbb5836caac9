"""The pure decision core: operator overrides, then the typo detector, then forwarding."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from . import names
from .codes import QTYPE_NUMBERS, Action, Qtype, TypoPolicy, Verdict
from .exceptions import EMPTY as NO_EXCEPTIONS
from .exceptions import ZONE as EXCEPTIONS_ZONE
from .exceptions import Exceptions
from .rpz import PolicyTable, RpzHit, RpzZone
from .typo import TypoGuard, TypoMatch

ANY = QTYPE_NUMBERS[Qtype.ANY]
DEFAULT_TYPO_QTYPES = frozenset(QTYPE_NUMBERS[q] for q in (Qtype.A, Qtype.AAAA, Qtype.MX))


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one query. action "forward" lets it through (passthru and log-only included)."""

    action: str  # an Action: forward | nxdomain | nodata | sink | refused | drop | tcp-only | local-data
    outcome: Verdict
    typo: TypoMatch | None = None
    rpz: RpzHit | None = None

    @property
    def reason(self) -> str:
        """Extended DNS Error text: why the answer was synthesised."""
        if self.typo is not None:
            return self.typo.describe()
        if self.rpz is not None:
            return f"override {self.rpz.owner} in zone {self.rpz.zone} ({self.rpz.action})"
        return ""


FORWARD = Decision(Action.FORWARD, Verdict.FORWARDED)


@dataclass(frozen=True)
class Policy:
    """One immutable snapshot of everything that decides; a reload builds a new one and swaps it in."""

    table: PolicyTable
    guard: TypoGuard
    typo_action: str = Action.NXDOMAIN
    domain_actions: Mapping[str, str] = field(default_factory=dict)  # protected domain -> action
    typo_qtypes: frozenset[int] = DEFAULT_TYPO_QTYPES
    generation: int = 0
    exceptions: Exceptions = NO_EXCEPTIONS  # all entries; the active domain-wide ones are also the exceptions zone
    client_dependent: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        # Some rule triggers on the client address: decisions must not be shared across clients.
        dependent = any(z.v4_lengths or z.v6_lengths for z in self.table.zones)
        object.__setattr__(self, "client_dependent", dependent)

    def decides_alike(self, client: str) -> bool:
        """Whether client gets the decisions every client gets: no client-IP rule matches its address."""
        if not self.client_dependent:
            return True
        addr = _address(client)
        return addr is not None and not any(zone.match_client(addr) for zone in self.table.zones)

    def decide(self, qname: str, qtype: int, client: str | None) -> Decision:
        """Overrides win, the detector beats forwarding; a pure function of the snapshot and the question."""
        addr = _address(client) if self.client_dependent else None  # parse the address only if a rule asks
        hit = self.table.lookup(qname, addr)
        if hit is not None:
            if hit.action == Action.PASSTHRU:
                return Decision(Action.FORWARD, Verdict.PASSTHRU, rpz=hit)
            return Decision(hit.action, Verdict.BLOCKED_OVERRIDE, rpz=hit)
        if qtype not in self.typo_qtypes and qtype != ANY:  # ANY asks for every type, the typo-checked ones too
            return FORWARD
        match = self.guard.find_neighbour(qname)
        if match is None:
            return FORWARD
        action = self.action_for(match)
        if action == Action.LOG_ONLY or match.policy == TypoPolicy.LOG_ONLY:
            return Decision(Action.FORWARD, Verdict.LOGGED_TYPO, typo=match)
        return Decision(action, Verdict.BLOCKED_TYPO, typo=match)

    def mail_match(self, domain: str, now: float) -> TypoMatch | None:
        """The typo match of a recipient domain for the sink: None when not a neighbour or a domain-wide
        exception covers it (the exception hook; the exceptions zone does the same for DNS)."""
        if self.exceptions.for_domain(domain, now) is not None:
            return None
        return self.guard.find_neighbour(domain)

    def entry_of(self, match: TypoMatch) -> str:
        """The protected entry as configured that a match falls under: mil for navy.mil, else the domain."""
        return next((p for p in names.parents(match.protected) if p in self.guard.protected), match.protected)

    def action_for(self, match: TypoMatch) -> str:
        """The [typo] domains action of the match's protected domain or of its entry, else [typo] action."""
        return (
            self.domain_actions.get(match.protected)
            or self.domain_actions.get(self.entry_of(match))
            or self.typo_action
        )


@functools.lru_cache(maxsize=4096)  # per client, not per query: parsing an address is most of a decision's cost
def _address(client: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not client:
        return None
    try:
        return ipaddress.ip_address(client.split("%")[0])
    except ValueError:
        return None


def exception_zone(exceptions: Exceptions, now: float) -> RpzZone:
    """The passthru zone of the exceptions active at `now`: first in the table, so it beats every override."""
    from .rpz import load_rpz_text

    return load_rpz_text(exceptions.rpz_text(now), exceptions.path or EXCEPTIONS_ZONE, name=EXCEPTIONS_ZONE)


def with_exceptions(table: PolicyTable, exceptions: Exceptions, now: float) -> PolicyTable:
    """table with its exceptions zone (re)built for `now`, in front of the other zones."""
    others = [z for z in table.zones if z.name != EXCEPTIONS_ZONE]
    return PolicyTable([exception_zone(exceptions, now), *others])


def expire(policy: Policy, now: float) -> Policy | None:
    """A new snapshot without the domain-wide exceptions that ended by `now`; None when none did.

    The running guard calls this every second: expiry needs no reload, and the new snapshot empties every
    memo (policy stage, fast path) and gives the export a new serial, as a reload would.
    """
    zone = next((z for z in policy.table.zones if z.name == EXCEPTIONS_ZONE), None)
    if zone is None:
        return None
    wanted = {e.name for e in policy.exceptions.active(now) if e.domain_wide}
    if wanted == {r.owner for r in zone.rules if not r.owner.startswith("*.")}:
        return None
    return replace(
        policy, table=with_exceptions(policy.table, policy.exceptions, now), generation=policy.generation + 1
    )
