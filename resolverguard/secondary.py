"""export-rpz --check-secondary: ask the guard and a secondary for the export zone's SOA serial (a client)."""

from __future__ import annotations

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from .config import Config, parse_endpoint
from .export.tsig import TsigKey, configured_key


def soa_serial(host: str, port: int, origin: str, tsig: TsigKey | None, timeout: float = 2.0) -> int | None:
    """The SOA serial ``host`` answers for ``origin`` (over UDP, signed if a key is given); None if it has none."""
    query = dns.message.make_query(origin, dns.rdatatype.SOA)
    if tsig is not None:
        query.use_tsig(tsig.keyring, tsig.name, algorithm=tsig.algorithm)
    reply = dns.query.udp(query, host, timeout=timeout, port=port)
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return rrset[0].serial
    return None


def check_secondary(cfg: Config, secondary: str) -> int:
    """0 if the secondary has the guard's serial, 1 if not (or unreachable); one line on stdout either way."""
    target = parse_endpoint(secondary, 53)
    tsig = configured_key(cfg.export_tsig)
    guard = cfg.listen[0]
    serials = {}
    for who, ep in (("guard", guard), ("secondary", target)):
        try:
            serials[who] = soa_serial(ep.host, ep.port, cfg.export_origin, tsig)
        except (dns.exception.DNSException, OSError) as exc:
            print(f"not in sync: {who} {ep} did not answer SOA {cfg.export_origin}: {type(exc).__name__} {exc}")
            return 1
    same = serials["guard"] is not None and serials["guard"] == serials["secondary"]
    print(
        f"{'in sync' if same else 'not in sync'}: zone {cfg.export_origin} guard {guard} serial "
        f"{serials['guard']}, secondary {target} serial {serials['secondary']}"
    )
    return 0 if same else 1
