"""Operator overrides and typo neighbours → one RPZ zone text, and an AXFR responder for it; pure.

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

import functools
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.renderer
import dns.rrset
import dns.zone

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

_ACTION_RDATA: Final[dict[str, str]] = {
    "nxdomain": "CNAME .",
    "nodata": "CNAME *.",
    "passthru": "CNAME rpz-passthru.",
    "drop": "CNAME rpz-drop.",
    "tcp-only": "CNAME rpz-tcp-only.",
}
EXPORT_ACTIONS: Final = ("nxdomain", "nodata", "drop", "tcp-only")
AXFR_MAX_MESSAGE: Final = 65535

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
        serial = re.search(r"^@ SOA \S+ \S+ (\d+) ", previous_export, re.M)
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


def _rule_lines(hit: RpzHit) -> list[str]:
    if hit.action != "local-data":
        return [f"{hit.owner} {hit.ttl} {_ACTION_RDATA[hit.action]}"]
    lines = []
    for rrset in hit.records:
        rdtype = dns.rdatatype.to_text(rrset.rdtype)
        for rdata in rrset:
            lines.append(f"{hit.owner} {rrset.ttl} IN {rdtype} {rdata.to_text()}")
    return lines


def _ancestors_and_self(name: str) -> Iterable[str]:
    yield name
    start = name.find(".")
    while start != -1:
        yield name[start + 1 :]
        start = name.find(".", start + 1)


def render_rpz(
    table: PolicyTable | None,
    typo_neighbours: Mapping[str, Iterable[str]],
    *,
    origin: str = DEFAULT_ORIGIN,
    serial: int | None = None,
    action: str = "nxdomain",
    ttl: int = DEFAULT_TTL,
    serials: SerialStore | None = None,
    progress: Progress | None = None,
) -> str:
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

    body: list[str] = []
    if rules:
        body.append("; operator overrides (resolverguard zones, first zone first)")
    for hit in rules:
        body.extend(_rule_lines(hit))
        done += 1
        tick()
    exported = skipped = 0
    if neighbours:
        body.append(f"; typo neighbours of protected domains: {_ACTION_RDATA[action]}")
    rdata = _ACTION_RDATA[action]
    for name, of in neighbours:
        lines = []
        if name not in protected and (table is None or table.lookup_qname(name) is None):
            lines.append(f"{name} {ttl} {rdata}")
        if name not in protected_above and (table is None or table.covers_subtree(name) is None):
            lines.append(f"*.{name} {ttl} {rdata}")
        if lines:
            body.append(f"; typo of {of}")
            body.extend(lines)
            exported += 1
        if len(lines) < 2:
            skipped += 1
        done += 1
        tick()
    if progress is not None and total == 0:
        progress(0, 0)

    body_text = "\n".join(body) + "\n"
    digest = hashlib.sha256(f"{origin_name}\n{ttl}\n{body_text}".encode()).digest()
    if serial is None:
        serial = (serials or _DEFAULT_SERIALS).next(digest)
    refresh, retry, expire, minimum = SOA_TIMERS
    head = [
        f"; resolverguard RPZ export: {len(rules)} operator overrides, {exported} typo neighbours",
        f"; content sha256 {digest.hex()}",
        f"$ORIGIN {origin_name}",
        f"$TTL {ttl}",
        f"@ SOA {SOA_MNAME} {SOA_RNAME} {serial} {refresh} {retry} {expire} {minimum}",
        f"@ NS {SOA_MNAME}",
    ]
    log.info(
        "rpz export rendered origin=%s serial=%d overrides=%d neighbours=%d partly_skipped=%d",
        origin_name, serial, len(rules), exported, skipped,
    )
    return "\n".join(head) + "\n" + body_text


def render_policy(
    policy: Policy, *, origin: str = DEFAULT_ORIGIN, serials: SerialStore | None = None,
    progress: Progress | None = None,
) -> str:
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
    return render_rpz(policy.table, blocked, origin=origin, serials=serials)


def _blocks(policy: Policy, name: str) -> bool:
    match = policy.guard.find_neighbour(name)
    return (
        match is not None
        and match.blocks
        and policy.action_for(match) != "log-only"
    )


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


# ---------------------------------------------------------------- AXFR


# A policy line as render_rpz writes it: relative owner, TTL, CNAME to a fixed target. Parsing these
# directly is ~20x faster than dns.zone for the bulk of an export (dnspython: ~200 µs per record).
_FAST_LINE = re.compile(r"^([A-Za-z0-9*_-][A-Za-z0-9*_.-]*) (\d+) CNAME (\S+)$")


@functools.lru_cache(maxsize=4)
def _parsed(zone_text: str, origin: dns.name.Name) -> tuple[dns.rrset.RRset, list[dns.rrset.RRset]]:
    """SOA and every other RRset of a zone text; cached, so repeated transfers of one export are cheap."""
    lines = zone_text.splitlines()
    directives = [line.split() for line in lines if line.startswith("$")]
    fast_ok = all(
        d[0].upper() == "$TTL" or (d[0].upper() == "$ORIGIN" and len(d) == 2 and dns.name.from_text(d[1]) == origin)
        for d in directives
    )
    rest: list[str] = []
    fast: list[dns.rrset.RRset] = []
    targets: dict[str, dns.rdata.Rdata] = {}
    for line in lines:
        m = _FAST_LINE.match(line) if fast_ok else None
        if m is None or m.group(1).endswith(".") or ".." in m.group(1):
            rest.append(line)
            continue
        owner, ttl, target = m.groups()
        if (rdata := targets.get(target)) is None:
            rdata = targets[target] = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.CNAME, target, origin)
        rrset = dns.rrset.RRset(dns.name.from_text(owner, origin), dns.rdataclass.IN, dns.rdatatype.CNAME)
        rrset.add(rdata, int(ttl))
        fast.append(rrset)
    zone = dns.zone.from_text("\n".join(rest) + "\n", origin=origin, relativize=False, allow_include=False)
    soa: dns.rrset.RRset | None = None
    others: list[dns.rrset.RRset] = []
    for name, rdataset in zone.iterate_rdatasets():
        rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype)
        rrset.update(rdataset)
        if rdataset.rdtype == dns.rdatatype.SOA and name == origin:
            soa = rrset
        else:
            others.append(rrset)
    if soa is None:
        raise dns.zone.NoSOA
    return soa, others + fast


def axfr_response(query: dns.message.Message, zone_text: str, origin: str | dns.name.Name) -> list[bytes]:
    """Wire replies to a zone-transfer query for ``origin`` (TCP: frame each with a length prefix).

    AXFR and IXFR (answered with the full zone, RFC 1995 §4) get SOA, every RR, SOA, split over as many
    messages as needed; a SOA query (a secondary's refresh probe, usually over UDP) gets the SOA.
    Anything else — another name, class or type, or a non-QUERY opcode — gets one REFUSED reply.
    """
    origin_name = origin if isinstance(origin, dns.name.Name) else dns.name.from_text(origin)
    question = query.question[0] if len(query.question) == 1 else None
    if (
        question is None
        or query.opcode() != dns.opcode.QUERY
        or question.name != origin_name
        or question.rdclass != dns.rdataclass.IN
        or question.rdtype not in (dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.SOA)
    ):
        return [_refused(query)]
    soa, others = _parsed(zone_text, origin_name)
    if question.rdtype == dns.rdatatype.SOA:
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        reply.answer.append(soa)
        return [reply.to_wire()]
    messages: list[bytes] = []
    renderer = _renderer(query, question, first=True)
    for rrset in [soa, *others, soa]:
        for part in _split(rrset):
            try:
                renderer.add_rrset(dns.renderer.ANSWER, part)
            except dns.exception.TooBig:
                messages.append(_finish(renderer))
                renderer = _renderer(query, question, first=False)
                renderer.add_rrset(dns.renderer.ANSWER, part)
    messages.append(_finish(renderer))
    return messages


def _split(rrset: dns.rrset.RRset) -> Iterable[dns.rrset.RRset]:
    if len(rrset) <= 1:
        yield rrset
        return
    for rdata in rrset:
        one = dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype)
        one.add(rdata, rrset.ttl)
        yield one


def _renderer(query: dns.message.Message, question: dns.rrset.RRset, first: bool) -> dns.renderer.Renderer:
    flags = dns.flags.QR | dns.flags.AA | (query.flags & dns.flags.RD)
    renderer = dns.renderer.Renderer(id=query.id, flags=flags, max_size=AXFR_MAX_MESSAGE)
    if first:
        renderer.add_question(question.name, question.rdtype, question.rdclass)
    return renderer


def _finish(renderer: dns.renderer.Renderer) -> bytes:
    renderer.write_header()
    return renderer.get_wire()


def _refused(query: dns.message.Message) -> bytes:
    reply = dns.message.make_response(query)
    reply.set_rcode(dns.rcode.REFUSED)
    return reply.to_wire()


__all__ = ["DEFAULT_ORIGIN", "EXPORT_ACTIONS", "SerialStore", "axfr_response", "render_policy", "render_rpz"]
