"""The builder: a parsed dnspython zone (plus the fast reader's rules) -> an indexed RpzZone, with warnings."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import dns.name
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.zone

from resolverguard.codes import RPZ_TARGETS, Action
from resolverguard.errors import ZoneFileError
from resolverguard.rpz.client_ip import parse_client_ip
from resolverguard.rpz.diagnostics import Scan
from resolverguard.rpz.table import RpzHit, RpzZone, Trigger

log = logging.getLogger("resolverguard.rpz")

_CLIENT_IP = b"rpz-client-ip"
_UNSUPPORTED_TRIGGERS = {b"rpz-ip": "rpz-ip", b"rpz-nsdname": "rpz-nsdname", b"rpz-nsip": "rpz-nsip"}
_SPECIAL_TARGETS: dict[dns.name.Name, Action] = {dns.name.from_text(t): a for a, t in RPZ_TARGETS.items()}
_DNSSEC_TYPES = frozenset(
    {
        dns.rdatatype.RRSIG,
        dns.rdatatype.NSEC,
        dns.rdatatype.NSEC3,
        dns.rdatatype.NSEC3PARAM,
        dns.rdatatype.DNSKEY,
        dns.rdatatype.DS,
    }
)


@dataclass
class _Builder:
    zone_name: str
    origin: dns.name.Name
    path: str
    scan: Scan
    rules: list[RpzHit] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    exact: dict[str, RpzHit] = field(default_factory=dict)
    wildcard: dict[str, RpzHit] = field(default_factory=dict)
    client: dict[int, dict[int, dict[int, RpzHit]]] = field(default_factory=lambda: {4: {}, 6: {}})

    def line(self, owner: dns.name.Name) -> int | None:
        return self.scan.owners.get(owner)

    def warn(self, owner: dns.name.Name, problem: str) -> None:
        lineno = self.line(owner)
        where = f"{self.path}:{lineno}" if lineno else self.path
        message = f"{where}: {problem}"
        self.warnings.append(message)
        log.warning("rpz rule skipped zone=%s problem=%s", self.zone_name, message)


def index_zone(
    zone: dns.zone.Zone, origin: dns.name.Name, path: str, name: str, scan: Scan, fast: Sequence[RpzHit] = ()
) -> RpzZone:
    b = _Builder(name, origin, path, scan)
    for hit in fast:
        if hit.owner[:2] == "*.":
            b.wildcard[hit.owner[2:]] = hit
        elif hit.owner == "*":
            b.wildcard[""] = hit
        else:
            b.exact[hit.owner] = hit
    serial: int | None = None
    if (soa := zone.get_rdataset(origin, dns.rdatatype.SOA)) is None:
        raise ZoneFileError(path, None, f"no SOA record at the zone apex {origin}")
    serial = soa[0].serial
    for owner, node in zone.nodes.items():
        if owner == origin:
            others = [rds for rds in node if rds.rdtype not in (dns.rdatatype.SOA, dns.rdatatype.NS)]
            others = [rds for rds in others if rds.rdtype not in _DNSSEC_TYPES]
            if others:
                b.warn(owner, "records at the zone apex are not policy; ignored")
            continue
        _add_node(b, owner, node)
    if fast:  # back to file order
        b.rules = sorted([*fast, *b.rules], key=lambda hit: hit.line or 0) if b.rules else list(fast)
    v4 = b.client[4]
    v6 = b.client[6]
    rpz = RpzZone(
        name=name,
        origin=origin,
        path=path,
        serial=serial,
        rules=tuple(b.rules),
        warnings=tuple(b.warnings),
        exact=b.exact,
        wildcard=b.wildcard,
        client_v4=v4,
        client_v6=v6,
        v4_lengths=tuple(sorted(v4, reverse=True)),
        v6_lengths=tuple(sorted(v6, reverse=True)),
    )
    log.info(
        "rpz zone loaded zone=%s origin=%s rules=%d warnings=%d serial=%s",
        name,
        origin,
        rpz.rule_count,
        len(b.warnings),
        serial,
    )
    return rpz


def _add_node(b: _Builder, owner: dns.name.Name, node: Iterable[dns.rdataset.Rdataset]) -> None:
    relative = owner.relativize(b.origin)
    owner_text = relative.to_text().lower()
    rdatasets = [rds for rds in node if rds.rdtype not in _DNSSEC_TYPES]
    if not rdatasets:
        return
    tld = relative.labels[-1].lower()
    if tld in _UNSUPPORTED_TRIGGERS:
        b.warn(owner, f"{_UNSUPPORTED_TRIGGERS[tld]} triggers are not supported; rule {owner_text} ignored")
        return
    if tld.startswith(b"rpz-") and tld != _CLIENT_IP:
        b.warn(owner, f"unknown RPZ trigger label {tld.decode(errors='replace')}; rule {owner_text} ignored")
        return
    for rds in rdatasets:
        if rds.rdtype in (dns.rdatatype.SOA, dns.rdatatype.NS, dns.rdatatype.DNAME):
            kind = dns.rdatatype.to_text(rds.rdtype)
            b.warn(owner, f"{kind} below the apex is not policy; rule {owner_text} ignored")
            return
    action = _action(b, owner, relative, rdatasets)
    if action is None:
        return
    ttl = min(rds.ttl for rds in rdatasets)
    records: tuple[dns.rrset.RRset, ...] = ()
    if action == Action.LOCAL_DATA:
        records = tuple(_to_rrset(owner, rds) for rds in rdatasets)
    trigger: Trigger = "client-ip" if tld == _CLIENT_IP else "qname"
    hit = RpzHit(b.zone_name, trigger, owner_text, action, records, ttl, b.line(owner))
    if trigger == "client-ip":
        if relative.labels[0] == b"*":
            raise ZoneFileError(b.path, b.line(owner), f"wildcard {owner_text} is not allowed for rpz-client-ip")
        try:
            net = parse_client_ip(relative)
        except ValueError as exc:
            raise ZoneFileError(b.path, b.line(owner), f"bad rpz-client-ip trigger {owner_text}: {exc}") from None
        bits = net.max_prefixlen
        by_len = b.client[net.version].setdefault(net.prefixlen, {})
        key = int(net.network_address) >> (bits - net.prefixlen)
        if key in by_len:
            b.warn(owner, f"{owner_text} repeats the network of {by_len[key].owner}; ignored")
            return
        by_len[key] = hit
    elif relative.is_wild():
        b.wildcard[owner_text[2:] if len(relative) > 1 else ""] = hit
    else:
        b.exact[owner_text] = hit
    b.rules.append(hit)


def _action(
    b: _Builder, owner: dns.name.Name, relative: dns.name.Name, rdatasets: list[dns.rdataset.Rdataset]
) -> Action | None:
    cname = next((rds for rds in rdatasets if rds.rdtype == dns.rdatatype.CNAME), None)
    if cname is None:
        return Action.LOCAL_DATA
    target: dns.name.Name = cname[0].target
    if (special := _SPECIAL_TARGETS.get(target)) is not None:
        return special
    if target == owner or target == relative.derelativize(dns.name.root):
        return Action.PASSTHRU  # legacy: CNAME to the trigger's own name
    if target.labels and len(target) >= 2 and target.labels[-2].lower().startswith(b"rpz-"):
        b.warn(owner, f"unsupported RPZ action CNAME {target}; rule {relative} ignored")
        return None
    if target.is_subdomain(b.origin) and target != b.origin:
        rel = target.relativize(b.origin)
        if rel.labels == (b"*",) or (len(rel) == 1 and rel.labels[0].lower().startswith(b"rpz-")):
            raise ZoneFileError(
                b.path,
                b.line(owner),
                f"CNAME target {rel} became {target}: add the final dot ({rel}.)",
            )
    return Action.LOCAL_DATA


def _to_rrset(owner: dns.name.Name, rds: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(owner, rds.rdclass, rds.rdtype)
    rrset.update(rds)
    return rrset
