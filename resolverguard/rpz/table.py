"""The per-query table: RpzHit (one rule), RpzZone (one zone's rules indexed by hash), PolicyTable; pure."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import dns.name
import dns.rdatatype
import dns.rrset

from resolverguard import names
from resolverguard.codes import RPZ_ACTIONS, Action
from resolverguard.errors import ZoneFileError

Trigger = Literal["qname", "client-ip"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ACTIONS: tuple[Action, ...] = RPZ_ACTIONS
TRIGGERS: tuple[Trigger, ...] = ("qname", "client-ip")
DEFAULT_TTL = 300


@dataclass(slots=True, unsafe_hash=True)
class RpzHit:
    """One RPZ rule, as returned by PolicyTable.lookup; built once at load time and never changed.

    (Not frozen: a frozen dataclass costs ~2 us per rule to build, seconds for a million-rule zone.)
    """

    zone: str
    trigger: Trigger
    owner: str  # the trigger as written, relative to its zone origin, e.g. "*.army.ml"
    action: Action
    records: tuple[dns.rrset.RRset, ...] = field(default=(), compare=False, repr=False)
    ttl: int = DEFAULT_TTL
    line: int | None = field(default=None, compare=False)

    def records_for(self, qname: str | dns.name.Name, rdtype: int | None = None) -> list[dns.rrset.RRset]:
        """Local Data RRsets with the query name as owner; fresh objects, safe to put in a reply.

        ``CNAME *.garden.example.`` becomes ``<qname>.garden.example.``; if that name would be longer
        than 255 octets the CNAME points at ``garden.example.`` itself (still the sink). With ``rdtype``,
        only RRsets of that type are returned, plus a CNAME (which answers every type); an empty
        list then means NODATA.
        """
        owner = qname if isinstance(qname, dns.name.Name) else dns.name.from_text(qname)
        out: list[dns.rrset.RRset] = []
        for rrset in self.records:
            if rdtype is not None and rrset.rdtype not in (rdtype, dns.rdatatype.CNAME):
                continue
            new = dns.rrset.RRset(owner, rrset.rdclass, rrset.rdtype)
            new.update_ttl(rrset.ttl)
            for rdata in rrset:
                if rrset.rdtype == dns.rdatatype.CNAME and rdata.target.is_wild():
                    rdata = rdata.replace(target=_prepend(owner, rdata.target))
                new.add(rdata)
            out.append(new)
        return out


def _prepend(qname: dns.name.Name, wild_target: dns.name.Name) -> dns.name.Name:
    base = wild_target.parent()
    try:
        return dns.name.Name(qname.relativize(dns.name.root).labels + base.labels)
    except dns.name.NameTooLong:
        return base


@dataclass(frozen=True)
class RpzZone:
    """The rules of one RPZ zone file, indexed for hash lookups."""

    name: str
    origin: dns.name.Name
    path: str
    serial: int | None
    rules: tuple[RpzHit, ...]  # file order (dnspython node order), for export and listing
    warnings: tuple[str, ...]
    exact: dict[str, RpzHit] = field(repr=False)
    wildcard: dict[str, RpzHit] = field(repr=False)  # key: the name below "*.", "" for a bare "*"
    client_v4: dict[int, dict[int, RpzHit]] = field(repr=False)  # prefix length → network int → rule
    client_v6: dict[int, dict[int, RpzHit]] = field(repr=False)
    v4_lengths: tuple[int, ...] = field(repr=False)  # longest first
    v6_lengths: tuple[int, ...] = field(repr=False)

    @property
    def rule_count(self) -> int:
        return len(self.rules)

    def match_client(self, client: IPAddress) -> RpzHit | None:
        if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
            client = client.ipv4_mapped
        if isinstance(client, ipaddress.IPv4Address):
            table, lengths, bits = self.client_v4, self.v4_lengths, 32
        else:
            table, lengths, bits = self.client_v6, self.v6_lengths, 128
        if not lengths:
            return None
        value = int(client)
        for plen in lengths:  # longest prefix first
            if (hit := table[plen].get(value >> (bits - plen))) is not None:
                return hit
        return None

    def match_qname(self, qname: str, parents: Sequence[str]) -> RpzHit | None:
        if (hit := self.exact.get(qname)) is not None:
            return hit
        if self.wildcard:
            for parent in parents:  # nearest parent first: more labels wins
                if (hit := self.wildcard.get(parent)) is not None:
                    return hit
        return None


def _parents(qname: str) -> list[str]:
    """'mail.army.ml' → ['army.ml', 'ml', ''] (the wildcard bases that could cover it)."""
    return [*names.parents(qname)[1:], ""] if qname else []


def _norm_qname(qname: str | dns.name.Name) -> str:
    if isinstance(qname, dns.name.Name):
        return qname.to_text(omit_final_dot=True).lower() if qname != dns.name.root else ""
    if qname.endswith("."):
        qname = qname[:-1]
    return qname.lower()


class PolicyTable:
    """All configured RPZ zones in precedence order; lookup() is a handful of dict probes."""

    def __init__(self, zones: Sequence[RpzZone]) -> None:
        self.zones: tuple[RpzZone, ...] = tuple(zones)
        seen: set[str] = set()
        for zone in self.zones:
            if zone.name in seen:
                raise ZoneFileError(zone.path, None, f"duplicate RPZ zone name {zone.name!r}")
            seen.add(zone.name)
        self._has_client = any(z.v4_lengths or z.v6_lengths for z in self.zones)

    @property
    def rule_count(self) -> dict[str, int]:
        return {zone.name: zone.rule_count for zone in self.zones}

    def __len__(self) -> int:
        return sum(zone.rule_count for zone in self.zones)

    def lookup(self, qname: str | dns.name.Name, client: IPAddress | None = None) -> RpzHit | None:
        """The rule that decides this query, or None. qname: lowercase text without the final dot."""
        name = _norm_qname(qname)
        parents = _parents(name)
        check_client = client is not None and self._has_client
        for zone in self.zones:  # the first zone that matches at all decides (PASSTHRU included)
            if check_client and (hit := zone.match_client(client)) is not None:  # type: ignore[arg-type]
                return hit
            if (hit := zone.match_qname(name, parents)) is not None:
                return hit
        return None

    def lookup_qname(self, qname: str | dns.name.Name) -> RpzHit | None:
        """Like lookup() with QNAME triggers only (what holds for every client)."""
        return self.lookup(qname, None)

    def covers_subtree(self, name: str) -> RpzHit | None:
        """A wildcard rule at ``name`` or above it: it decides every name strictly below ``name``."""
        name = _norm_qname(name)
        bases = [name, *_parents(name)] if name else [""]
        for zone in self.zones:
            if zone.wildcard:
                for base in bases:
                    if (hit := zone.wildcard.get(base)) is not None:
                        return hit
        return None
