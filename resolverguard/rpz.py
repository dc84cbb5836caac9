"""RPZ zone files → PolicyTable: operator overrides looked up by hash per query; pure, no I/O but reading the file.

Supported (see docs/rpz.md for the full story):

* Triggers: QNAME (``army.ml`` exact, ``*.army.ml`` every name below it) and CLIENT-IP
  (``24.0.2.0.192.rpz-client-ip`` = 192.0.2.0/24, ``128.1.zz.db8.2001.rpz-client-ip`` = 2001:db8::1/128).
  RPZ-IP, NSDNAME and NSIP triggers are *not* supported: such rules are skipped and reported in
  ``RpzZone.warnings`` (the rest of the zone loads).
* Actions: ``CNAME .`` NXDOMAIN, ``CNAME *.`` NODATA, ``CNAME rpz-passthru.`` PASSTHRU (and the legacy
  CNAME to the trigger's own name), ``CNAME rpz-drop.`` DROP, ``CNAME rpz-tcp-only.`` TCP-ONLY; any
  other RRsets are Local Data, answered as given; ``CNAME *.garden.example.`` prepends the query name.
* Zone origin: the first ``$ORIGIN`` before any record, else the file stem plus ``.``
  (``10-overrides.rpz`` → ``10-overrides.``). Owner names are relative to that origin; an owner
  outside it (usually an absolute name written with a trailing dot) is an error.
* Zone name (metrics label, ``RpzHit.zone``): the ``name`` argument, else the file stem.

Precedence (``PolicyTable.lookup``): the first configured zone that matches at all decides, PASSTHRU
included (Unbound's behaviour; PowerDNS would go on to later zones after a PASSTHRU). Inside one zone:
CLIENT-IP beats QNAME, the longest client prefix wins, an exact QNAME beats a wildcard, and the wildcard
with more labels wins. Every step is a dict lookup: cost grows with the qname's label count and the
number of distinct client prefix lengths, never with the number of rules.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.ttl
import dns.zone
import dns.zonefile

from resolverguard.errors import ZoneFileError

log = logging.getLogger(__name__)

Action = Literal["nxdomain", "nodata", "passthru", "drop", "tcp-only", "local-data"]
Trigger = Literal["qname", "client-ip"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ACTIONS: tuple[Action, ...] = ("nxdomain", "nodata", "passthru", "drop", "tcp-only", "local-data")
TRIGGERS: tuple[Trigger, ...] = ("qname", "client-ip")

_CLIENT_IP = b"rpz-client-ip"
_UNSUPPORTED_TRIGGERS = {b"rpz-ip": "rpz-ip", b"rpz-nsdname": "rpz-nsdname", b"rpz-nsip": "rpz-nsip"}
_SPECIAL_TARGETS: dict[dns.name.Name, Action] = {
    dns.name.root: "nxdomain",
    dns.name.from_text("*."): "nodata",
    dns.name.from_text("rpz-passthru."): "passthru",
    dns.name.from_text("rpz-drop."): "drop",
    dns.name.from_text("rpz-tcp-only."): "tcp-only",
}
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
_DEFAULT_TTL = 300


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
    ttl: int = _DEFAULT_TTL
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
    if not qname:
        return []
    out = []
    start = qname.find(".")
    while start != -1:
        out.append(qname[start + 1 :])
        start = qname.find(".", start + 1)
    out.append("")
    return out


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


# ---------------------------------------------------------------- loading


@dataclass
class _Scan:
    """What a light pre-scan of the text knows: owners → first line, and the first $ORIGIN."""

    origin: dns.name.Name | None = None
    owners: dict[dns.name.Name, int] = field(default_factory=dict)
    records: list[tuple[int, dns.name.Name, str]] = field(default_factory=list)  # line, owner, type


def _paren_depth(line: str, depth: int) -> tuple[int, str]:
    """Track parentheses outside quotes and comments; also return the line without its comment."""
    if "(" not in line and ")" not in line and '"' not in line and ";" not in line:
        return depth, line
    quoted = escaped = False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch == ";":
            return depth, line[:i]
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
    return depth, line


def _record_type(tokens: list[str]) -> str:
    for tok in tokens:
        if tok in ("(", ")"):
            continue
        try:
            dns.ttl.from_text(tok)
            continue
        except Exception:
            pass
        try:
            dns.rdataclass.from_text(tok)
            continue
        except Exception:
            pass
        return tok.strip("()").upper()
    return ""


def _prescan(text: str, default_origin: dns.name.Name, numbers: Sequence[int] | None = None) -> _Scan:
    """Map owner names to line numbers, so errors found after parsing can still name a line.

    ``numbers``: the file's line number of each line of ``text`` (when simple lines were taken out).
    """
    scan = _Scan()
    origin = default_origin
    owner: dns.name.Name | None = None
    depth = 0
    seen_record = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        if numbers is not None:
            lineno = numbers[lineno - 1]
        if depth > 0:
            depth, _ = _paren_depth(raw, depth)
            continue
        depth, line = _paren_depth(raw, 0)
        if not line.strip():
            continue
        tokens = line.split()
        if line[0] == "$":
            if tokens[0].upper() == "$ORIGIN" and len(tokens) > 1:
                try:
                    origin = dns.name.from_text(tokens[1], origin=origin)
                except dns.exception.DNSException:
                    continue  # dnspython reports it with its line
                if scan.origin is None and not seen_record:
                    scan.origin = origin
            continue
        if line[0] in " \t":
            rest = tokens
        else:
            try:
                owner = dns.name.from_text(tokens[0], origin=origin) if tokens[0] != "@" else origin
            except dns.exception.DNSException:
                owner = None
            rest = tokens[1:]
        seen_record = True
        if owner is None:
            continue
        scan.owners.setdefault(owner, lineno)
        scan.records.append((lineno, owner, _record_type(rest)))
    return scan


_SYNTAX_LINE = re.compile(r":(\d+): (.*)$", re.S)


def _syntax_error(path: str, exc: dns.exception.SyntaxError, text: str, origin: dns.name.Name) -> ZoneFileError:
    message = str(exc)
    if message.startswith(path + ":") and (m := _SYNTAX_LINE.match(message, len(path))):
        line, problem = int(m.group(1)), _one_line(m.group(2))
        # dnspython counts the line after a record whose end it had to read: find the record at fault
        # (the earlier line first: had it been broken, dnspython would have stopped there)
        for candidate in (line - 1, line):
            if (found := _line_problem(text, candidate, origin)) is not None:
                return ZoneFileError(path, candidate, found)
        return ZoneFileError(path, line, problem)
    return ZoneFileError(path, None, _one_line(message))


def _line_problem(text: str, lineno: int, origin: dns.name.Name) -> str | None:
    """Parse one single-line record alone; its problem, or None if it parses (or cannot be tried alone)."""
    lines = text.splitlines()
    if not 1 <= lineno <= len(lines):
        return None
    line = lines[lineno - 1]
    if not line.strip() or line.lstrip().startswith((";", "$")) or "(" in line:
        return None
    record = ("@" + line) if line[0] in " \t" else line
    probe = f"$ORIGIN {origin}\n@ 300 SOA a. b. 1 1 1 1 1\n{record}\n"
    try:
        dns.zone.from_text(probe, origin=origin, relativize=False, allow_include=False, check_origin=False)
    except dns.exception.SyntaxError as exc:
        problem = _one_line(re.sub(r"^<string>:\d+: ", "", str(exc)))
        return f"{problem} in {line.strip()!r}"
    except dns.exception.DNSException:
        return None
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def parse_client_ip(relative: dns.name.Name) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``24.0.2.0.192.rpz-client-ip`` → 192.0.2.0/24; ``128.1.zz.db8.2001.rpz-client-ip`` → 2001:db8::1/128.

    ``relative`` is the owner relative to the zone origin (its last label is the trigger label).
    Raises ValueError with a one-line reason.
    """
    labels = [lab.decode("ascii", "replace").lower() for lab in relative.labels[:-1]]
    if len(labels) < 2:
        raise ValueError("needs <prefix-length>.<reversed address>")
    plen_text, addr_labels = labels[0], labels[1:][::-1]
    if not plen_text.isdigit():
        raise ValueError(f"prefix length {plen_text!r} is not a number")
    plen = int(plen_text)
    is_v4 = len(addr_labels) == 4 and all(lab.isdigit() for lab in addr_labels)
    if is_v4:
        if plen < 1 or plen > 32:
            raise ValueError(f"IPv4 prefix length {plen} is outside 1..32")
        if any(len(lab) > 3 or int(lab) > 255 or (len(lab) > 1 and lab[0] == "0") for lab in addr_labels):
            raise ValueError(f"bad IPv4 address {'.'.join(addr_labels)}")
        address = ".".join(addr_labels)
    else:
        if plen < 1 or plen > 128:
            raise ValueError(f"IPv6 prefix length {plen} is outside 1..128")
        if addr_labels.count("zz") > 1:
            raise ValueError("more than one 'zz' in an IPv6 address")
        if "zz" not in addr_labels and len(addr_labels) != 8:
            raise ValueError(f"IPv6 address needs 8 groups or one 'zz', got {len(addr_labels)} labels")
        if "zz" in addr_labels and len(addr_labels) > 8:
            raise ValueError("IPv6 address with 'zz' has too many groups")
        for lab in addr_labels:
            if lab != "zz" and not re.fullmatch(r"[0-9a-f]{1,4}", lab):
                raise ValueError(f"bad IPv6 group {lab!r}")
        address = ":".join("" if lab == "zz" else lab for lab in addr_labels)
        if addr_labels[0] == "zz":
            address = ":" + address
        if addr_labels[-1] == "zz":
            address += ":"
    try:
        return ipaddress.ip_network(f"{address}/{plen}", strict=True)
    except ValueError as exc:
        raise ValueError(_one_line(str(exc))) from None


def encode_client_ip(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """The inverse of parse_client_ip: 192.0.2.0/24 → '24.0.2.0.192.rpz-client-ip'."""
    if network.version == 4:
        labels = str(network.network_address).split(".")
    else:
        compressed = network.network_address.compressed
        if "::" in compressed:
            left, right = compressed.split("::")
            labels = [*(left.split(":") if left else []), "zz", *(right.split(":") if right else [])]
        else:
            labels = compressed.split(":")
    return ".".join([str(network.prefixlen), *reversed(labels), "rpz-client-ip"])


def load_rpz(path: str | Path, name: str | None = None) -> RpzZone:
    """Read and index one RPZ zone file; raises ZoneFileError naming the file and line."""
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ZoneFileError(where, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise ZoneFileError(where, None, f"cannot read: {exc.strerror or exc}") from exc
    return load_rpz_text(text, where, name=name if name is not None else path.stem, stem=path.stem)


def load_rpz_text(text: str, path: str, *, name: str, stem: str | None = None, fast_path: bool = True) -> RpzZone:
    """Like load_rpz, from text already read; ``path`` is only used in messages."""
    try:
        default_origin = dns.name.from_text((stem if stem is not None else name) + ".")
    except dns.exception.DNSException as exc:
        raise ZoneFileError(path, None, f"file stem is not a valid zone origin: {exc}") from exc
    fast = _split_fast(text, name) if fast_path else None
    numbers = None
    if fast is not None:
        text, numbers = fast.rest, fast.numbers
    scan = _prescan(text, default_origin, numbers)
    origin = scan.origin or default_origin
    if fast is not None and not fast.fits(scan, origin):
        return load_rpz_text(fast.original, path, name=name, stem=stem, fast_path=False)  # dnspython decides all
    try:
        zone = dns.zone.from_text(
            text, origin=origin, relativize=False, allow_include=False, filename=path, check_origin=False
        )
    except dns.exception.SyntaxError as exc:
        error = _syntax_error(path, exc, text, origin)
        if numbers is not None and error.line:  # a line of the rest: its number in the file
            error = ZoneFileError(path, numbers[min(error.line, len(numbers)) - 1], error.problem)
        raise error from exc
    except dns.zonefile.CNAMEAndOtherData as exc:
        raise ZoneFileError(path, _cname_conflict_line(scan), "CNAME and other data at the same owner") from exc
    except dns.exception.DNSException as exc:
        raise ZoneFileError(path, None, _one_line(str(exc))) from exc
    for owner, lineno in scan.owners.items():
        if not owner.is_subdomain(origin):
            raise ZoneFileError(
                path,
                lineno,
                f"owner {owner} is outside the zone {origin} (absolute name with a trailing dot? "
                f"write it without the final dot)",
            )
    return _index(zone, origin, path, name, scan, fast.hits if fast is not None else ())


# One policy rule per line, the bulk of any large RPZ: "owner [ttl] [IN] CNAME <action target>".
_FAST_LINE = re.compile(
    r"((?:\*|[a-z0-9_-]{1,63})(?:\.[a-z0-9_-]{1,63})*)[ \t]+(?:(\d{1,9})[ \t]+)?(?:in[ \t]+)?"
    r"cname[ \t]+(\.|\*\.|rpz-passthru\.|rpz-drop\.|rpz-tcp-only\.)[ \t]*(?:;.*)?",
    re.IGNORECASE,
)
_FAST_ACTIONS: dict[str, Action] = {".": "nxdomain", "*.": "nodata", "rpz-passthru.": "passthru",
                                    "rpz-drop.": "drop", "rpz-tcp-only.": "tcp-only"}  # fmt: skip


@dataclass
class _Fast:
    """Rules read straight from simple lines, and the other lines, left for dnspython."""

    original: str
    rest: str  # the other lines, for dnspython
    numbers: list[int]  # the file's line number of each line of rest
    hits: list[RpzHit]

    def fits(self, scan: _Scan, origin: dns.name.Name) -> bool:
        """No owner in both parts, and every fast owner is a valid name under the origin."""
        room = 254 - len(origin.to_text())
        if any(len(hit.owner) >= room for hit in self.hits):
            return False
        owners = {hit.owner for hit in self.hits}
        return not any(
            owner.is_subdomain(origin) and owner.relativize(origin).to_text().lower() in owners
            for owner in scan.owners
        )


def _split_fast(text: str, zone_name: str) -> _Fast | None:
    """Read the simple policy lines of a zone without dnspython (~50x faster); None: let dnspython do all.

    Only when the file is plain enough that doing so cannot change the meaning: at most one $ORIGIN,
    before any record; no $GENERATE; a numeric $TTL; no continuation line after a simple line; no owner
    twice among the simple lines.
    """
    lines = text.split("\n")
    hits: list[RpzHit] = []
    seen: set[str] = set()
    ttl: int | None = None
    depth = 0
    origins = 0
    record_seen = last_owner_fast = False
    for i, raw in enumerate(lines):
        if last_owner_fast and depth == 0 and raw[:1] in (" ", "\t") and raw.strip()[:1] not in ("", ";"):
            return None  # a record for the owner of a simple line
        if depth > 0 or "(" in raw or ")" in raw or '"' in raw:
            depth, _ = _paren_depth(raw, depth)
            record_seen, last_owner_fast = True, False
            continue
        line = raw.rstrip("\r")
        if not line or line[0] == ";":
            continue
        if line[0] == "$":
            word, _, value = line.partition(" ")
            word = word.upper()
            if word == "$TTL":
                value = value.split(";")[0].strip()
                if not value.isdigit():
                    return None
                ttl = int(value)
            elif word == "$ORIGIN":
                origins += 1
                if origins > 1 or record_seen:
                    return None
            else:
                return None  # $GENERATE, $INCLUDE (refused by dnspython with its line): the general path
            continue
        if line[0] in " \t":
            record_seen = record_seen or bool(line.strip())
            continue
        record_seen = True
        m = _FAST_LINE.fullmatch(line)
        if m is None or (owner := m.group(1).lower()) in seen or owner.rsplit(".", 1)[-1].startswith("rpz-"):
            last_owner_fast = False
            continue
        if "*" in owner[1:] or (owner[0] == "*" and owner not in ("*",) and owner[1] != "."):
            last_owner_fast = False
            continue
        rule_ttl = int(m.group(2)) if m.group(2) else ttl
        if rule_ttl is None:
            return None
        seen.add(owner)
        hits.append(RpzHit(zone_name, "qname", owner, _FAST_ACTIONS[m.group(3).lower()], (), rule_ttl, i + 1))
        lines[i] = None  # type: ignore[call-overload]  # taken: not for dnspython
        last_owner_fast = True
    if not hits:
        return None
    numbers = [i + 1 for i, line in enumerate(lines) if line is not None]
    return _Fast(text, "\n".join(lines[i - 1] for i in numbers), numbers, hits)


def _cname_conflict_line(scan: _Scan) -> int | None:
    types: dict[dns.name.Name, set[str]] = {}
    for lineno, owner, rdtype in scan.records:
        types.setdefault(owner, set()).add(rdtype)
        kinds = types[owner] - {"RRSIG", "NSEC", "NSEC3"}
        if "CNAME" in kinds and len(kinds) > 1:
            return lineno
    return None


@dataclass
class _Builder:
    zone_name: str
    origin: dns.name.Name
    path: str
    scan: _Scan
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


def _index(zone: dns.zone.Zone, origin: dns.name.Name, path: str, name: str, scan: _Scan,
           fast: Sequence[RpzHit] = ()) -> RpzZone:  # fmt: skip
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
        name, origin, rpz.rule_count, len(b.warnings), serial,
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
            b.warn(owner, f"{dns.rdatatype.to_text(rds.rdtype)} below the apex is not policy; rule {owner_text} ignored")
            return
    action = _action(b, owner, relative, rdatasets)
    if action is None:
        return
    ttl = min(rds.ttl for rds in rdatasets)
    records: tuple[dns.rrset.RRset, ...] = ()
    if action == "local-data":
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
        return "local-data"
    target: dns.name.Name = cname[0].target
    if (special := _SPECIAL_TARGETS.get(target)) is not None:
        return special
    if target == owner or target == relative.derelativize(dns.name.root):
        return "passthru"  # legacy: CNAME to the trigger's own name
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
    return "local-data"


def _to_rrset(owner: dns.name.Name, rds: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(owner, rds.rdclass, rds.rdtype)
    rrset.update(rds)
    return rrset


def load_zone_dir(directory: str | Path) -> list[RpzZone]:
    """Load ``*.rpz`` in sorted file-name order: that order is the precedence order (first wins)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ZoneFileError(str(directory), None, "RPZ zone directory does not exist")
    return [load_rpz(path) for path in sorted(directory.glob("*.rpz"), key=lambda p: p.name)]


__all__ = [
    "ACTIONS",
    "TRIGGERS",
    "PolicyTable",
    "RpzHit",
    "RpzZone",
    "encode_client_ip",
    "load_rpz",
    "load_rpz_text",
    "load_zone_dir",
    "parse_client_ip",
]
