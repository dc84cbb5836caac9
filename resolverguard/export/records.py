"""Operator overrides and typo neighbours → the records of one RPZ zone (Export), and its text; pure.

The exported zone lets another resolver (Unbound, BIND, PowerDNS, Knot) enforce the same blocks:
``rpz: name: rpz.resolverguard. zonefile: ...`` or ``primary: <guard>``. Layout: SOA, NS, the operator
overrides (from the PolicyTable, first zone first), then the typo neighbours, each as ``name`` and
``*.name`` with ``CNAME .`` (NXDOMAIN) or the chosen action.

Overrides keep winning. In resolverguard the override zones are consulted before the typo guard; in a
single exported zone precedence is by specificity instead, so a neighbour rule is left out whenever it
could outrank an override: ``N`` is skipped if an override QNAME rule already matches ``N``, ``*.N`` is
skipped if an override wildcard sits at ``N`` or above it. A neighbour that is a protected domain (or,
for ``*.N``, an ancestor of one) is never exported either.

Serial: unix time in seconds, bumped to previous+1 when two different contents fall in the same second,
unchanged when the content (everything below the SOA) is unchanged. See SerialStore.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final, NamedTuple

import dns.exception
import dns.name
import dns.rdatatype

from resolverguard.codes import RPZ_TARGETS
from resolverguard.errors import ConfigError
from resolverguard.policy import Policy
from resolverguard.rpz import PolicyTable, RpzHit
from resolverguard.typo import neighbours as enumerate_neighbours

log = logging.getLogger(__name__)

DEFAULT_ORIGIN: Final = "rpz.resolverguard."
SOA_MNAME: Final = "ns.resolverguard.invalid."
SOA_RNAME: Final = "hostmaster.resolverguard.invalid."
SOA_TIMERS: Final = (60, 60, 1209600, 60)  # refresh, retry, expire (14 days: keep blocking if we vanish), minimum
DEFAULT_TTL: Final = 300

EXPORT_ACTIONS: Final = ("nxdomain", "nodata", "drop", "tcp-only")

Progress = Callable[[int, int], None]


class SerialStore:
    """Hands out zone serials that grow on every content change.

    serial = max(previous + 1, int(clock())): unix time, so it also grows across restarts (as long as
    the clock does not go back and changes stay under one per second on average). The same content
    digest gets the same serial again, so secondaries do not transfer an unchanged zone.
    """

    def __init__(self, previous: int = 0, clock: Callable[[], float] = time.time, digest: bytes | None = None) -> None:
        self._serial = previous
        self._digest = digest
        self._clock = clock
        self._lock = threading.Lock()

    @classmethod
    def resume(cls, previous_export: str) -> SerialStore:
        """Continue the serials of an earlier export (its text): same content, same serial; else a larger one."""
        serial = re.search(r"^@ (?:\d+ )?SOA \S+ \S+ (\d+) ", previous_export, re.M)
        digest = re.search(r"^; content sha256 ([0-9a-f]{64})$", previous_export, re.M)
        return cls(int(serial.group(1)) if serial else 0, digest=bytes.fromhex(digest.group(1)) if digest else None)

    @property
    def current(self) -> int:
        return self._serial

    def next(self, digest: bytes) -> int:
        with self._lock:
            if digest != self._digest:
                self._serial = max(self._serial + 1, int(self._clock())) % 2**32 or 1
                self._digest = digest
            return self._serial


_DEFAULT_SERIALS = SerialStore()  # process-wide, used when render_rpz gets neither serial nor serials


class Record(NamedTuple):
    """One resource record of the export: owner relative to the origin, TTL, type and rdata as zone text."""

    owner: str
    ttl: int
    rdtype: str
    rdata: str

    def line(self) -> str:
        return f"{self.owner} {self.ttl} {self.rdtype} {self.rdata}"


@dataclasses.dataclass(frozen=True)
class Export:
    """The built zone: apex SOA/NS are implied by origin and serial; ``body`` is records and ``; comments``.

    Both forms a secondary can get are derived from this one object: text() for a zone file, and
    (render.py) the AXFR/IXFR messages from records.
    """

    origin: dns.name.Name
    serial: int
    ttl: int
    body: tuple[Record | str, ...]
    digest: bytes
    summary: str = ""

    @property
    def records(self) -> Iterable[Record]:
        return (item for item in self.body if isinstance(item, Record))

    def soa_rdata(self) -> str:
        refresh, retry, expire, minimum = SOA_TIMERS
        return f"{SOA_MNAME} {SOA_RNAME} {self.serial} {refresh} {retry} {expire} {minimum}"

    def apex(self) -> tuple[Record, Record]:
        return Record("@", self.ttl, "SOA", self.soa_rdata()), Record("@", self.ttl, "NS", SOA_MNAME)

    def text(self) -> str:
        head = [
            f"; resolverguard RPZ export: {self.summary}",
            f"; content sha256 {self.digest.hex()}",
            f"$ORIGIN {self.origin}",
            f"$TTL {self.ttl}",
            *(f"{r.owner} {r.rdtype} {r.rdata}" for r in self.apex()),  # TTL from $TTL
        ]
        body = [item if isinstance(item, str) else item.line() for item in self.body]
        return "\n".join(head + body) + "\n"

    def with_serial(self, serial: int) -> Export:
        return dataclasses.replace(self, serial=serial)


def _rule_records(hit: RpzHit) -> list[Record]:
    if hit.action != "local-data":
        return [Record(hit.owner, hit.ttl, "CNAME", RPZ_TARGETS[hit.action])]
    records = []
    for rrset in hit.records:
        rdtype = dns.rdatatype.to_text(rrset.rdtype)
        for rdata in rrset:
            records.append(Record(hit.owner, rrset.ttl, rdtype, rdata.to_text()))
    return records


def _ancestors_and_self(name: str) -> Iterable[str]:
    yield name
    start = name.find(".")
    while start != -1:
        yield name[start + 1 :]
        start = name.find(".", start + 1)


def render_rpz(table: PolicyTable | None, typo_neighbours: Mapping[str, Iterable[str]], **kwargs: object) -> str:
    """build_rpz() as zone file text."""
    return build_rpz(table, typo_neighbours, **kwargs).text()  # type: ignore[arg-type]


def build_rpz(
    table: PolicyTable | None,
    typo_neighbours: Mapping[str, Iterable[str]],
    *,
    origin: str = DEFAULT_ORIGIN,
    serial: int | None = None,
    action: str = "nxdomain",
    ttl: int = DEFAULT_TTL,
    serials: SerialStore | None = None,
    progress: Progress | None = None,
) -> Export:
    """One RPZ zone: SOA, NS, operator overrides, then typo neighbours (protected domain → neighbours).

    ``serial`` fixes the SOA serial; otherwise ``serials`` (or a process-wide SerialStore) picks it from
    the content digest. ``progress(done, total)`` is called every 1000 entries and once at the end.
    """
    if action not in EXPORT_ACTIONS:
        raise ConfigError(f"export action {action!r} is not one of {', '.join(EXPORT_ACTIONS)}")
    try:
        origin_name = dns.name.from_text(origin)
    except dns.exception.DNSException as exc:
        raise ConfigError(f"export origin {origin!r}: {exc}") from exc

    neighbours = _collect_neighbours(typo_neighbours)
    protected = {_norm(p) for p in typo_neighbours}
    protected_above: set[str] = set()
    for p in protected:
        protected_above.update(_ancestors_and_self(p))
    rules = _override_rules(table)
    total = len(rules) + len(neighbours)
    done = 0

    def tick() -> None:
        if progress is not None and (done % 1000 == 0 or done == total):
            progress(done, total)

    body: list[Record | str] = []
    if rules:
        body.append("; operator overrides (resolverguard zones, first zone first)")
    for hit in rules:
        body.extend(_rule_records(hit))
        done += 1
        tick()
    exported = skipped = 0
    target = RPZ_TARGETS[action]
    if neighbours:
        body.append(f"; typo neighbours of protected domains: CNAME {target}")
    for name, of in neighbours:
        records = []
        if name not in protected and (table is None or table.lookup_qname(name) is None):
            records.append(Record(name, ttl, "CNAME", target))
        if name not in protected_above and (table is None or table.covers_subtree(name) is None):
            records.append(Record(f"*.{name}", ttl, "CNAME", target))
        if records:
            body.append(f"; typo of {of}")
            body.extend(records)
            exported += 1
        if len(records) < 2:
            skipped += 1
        done += 1
        tick()
    if progress is not None and total == 0:
        progress(0, 0)

    hasher = hashlib.sha256(f"{origin_name}\n{ttl}\n".encode())
    for item in body:
        hasher.update((item if isinstance(item, str) else item.line()).encode() + b"\n")
    digest = hasher.digest()
    if serial is None:
        serial = (serials or _DEFAULT_SERIALS).next(digest)
    log.info(
        "rpz export rendered origin=%s serial=%d overrides=%d neighbours=%d partly_skipped=%d",
        origin_name,
        serial,
        len(rules),
        exported,
        skipped,
    )
    summary = f"{len(rules)} operator overrides, {exported} typo neighbours"
    return Export(origin_name, serial, ttl, tuple(body), digest, summary)


def render_policy(policy: Policy, **kwargs: object) -> str:
    """build_policy() as zone file text."""
    return build_policy(policy, **kwargs).text()  # type: ignore[arg-type]


def build_policy(
    policy: Policy,
    *,
    origin: str = DEFAULT_ORIGIN,
    serials: SerialStore | None = None,
    serial: int | None = None,
    progress: Progress | None = None,
) -> Export:
    """The effective policy of a running guard as one zone: overrides plus the neighbours it would block.

    Each enumerated neighbour is checked against the guard itself, so what is exported is exactly what
    is blocked: established domains (mail.com), allowlisted names and log-only classes or domains stay out.
    """
    protected = sorted(policy.guard.protected)
    blocked: dict[str, list[str]] = {}
    for i, domain in enumerate(protected, 1):
        found = {n for names in enumerate_neighbours(domain).values() for n in names}
        blocked[domain] = sorted(n for n in found if _blocks(policy, n))
        if progress is not None:
            progress(i, len(protected))
    return build_rpz(policy.table, blocked, origin=origin, serials=serials, serial=serial)


def _blocks(policy: Policy, name: str) -> bool:
    match = policy.guard.find_neighbour(name)
    return match is not None and match.blocks and policy.action_for(match) != "log-only"


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


def _collect_neighbours(typo_neighbours: Mapping[str, Iterable[str]]) -> list[tuple[str, str]]:
    """(neighbour, protected) sorted by neighbour, each neighbour once; bad names logged and skipped."""
    first_of: dict[str, str] = {}
    for protected, names in sorted(typo_neighbours.items()):
        for raw in names:
            norm = _norm(raw)
            if not norm or norm in first_of:
                continue
            try:
                text = dns.name.from_text(norm, origin=None).to_text().lower()
            except dns.exception.DNSException as exc:
                log.warning("typo neighbour skipped name=%r problem=%s", raw, exc)
                continue
            first_of.setdefault(text, _norm(protected))
    return sorted(first_of.items())


def _override_rules(table: PolicyTable | None) -> list[RpzHit]:
    """Every override rule once; for an owner present in several zones the first zone's rule."""
    if table is None:
        return []
    seen: set[str] = set()
    out = []
    for zone in table.zones:
        for hit in zone.rules:
            if hit.owner not in seen:
                seen.add(hit.owner)
                out.append(hit)
    return out


__all__ = [
    "DEFAULT_ORIGIN",
    "EXPORT_ACTIONS",
    "Export",
    "Record",
    "SerialStore",
    "build_policy",
    "build_rpz",
    "render_policy",
    "render_rpz",
]
