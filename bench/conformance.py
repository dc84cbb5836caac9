#!/usr/bin/env python3
"""EDNS compliance probes (the tests of ISC's genreport / RFC 8906) against resolverguard and Unbound, side by side.

    python bench/conformance.py [--json FILE]

Starts NSD on 127.0.0.1 serving conf.example (bench/differential.py's zone), Unbound forwarding "." to it and
resolverguard forwarding to it (the repository's zones/), each on its own high loopback port, and stops them by
PID. Every probe is one query to the zone apex (SOA) with RD=1, as RFC 8906 section 8 says for recursive
servers; the verdicts use genreport's vocabulary: ok, or the problems found (status, nosoa, soa, noopt, opt,
version, badvers, mbz, nodo, echoed, zflag, timeout).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype

sys.path.insert(0, str(Path(__file__).resolve().parent))

from differential import ORIGIN, Servers  # noqa: E402

ZONE = dns.message.make_query(ORIGIN, "SOA").question[0].name
UNKNOWN_OPTION, MBZ_FLAG, Z_BIT = 100, 0x0080, 0x0040


@dataclass(frozen=True)
class Probe:
    name: str
    dig: str  # the dig command genreport gives for it (for readers)
    build: Callable[[], dns.message.Message]
    expect: int = dns.rcode.NOERROR  # the extended rcode
    soa: bool = True  # SOA expected in the answer section
    edns: bool = True  # an OPT expected in the reply
    tcp: bool = False


def q(
    rdtype: str = "SOA",
    *,
    edns: int | None = 0,
    flags: int = dns.flags.RD,
    ednsflags: int = 0,
    options: list | None = None,
    opcode: int = dns.opcode.QUERY,
) -> Callable[[], dns.message.Message]:
    def build() -> dns.message.Message:
        m = dns.message.make_query(
            ZONE,
            rdtype,
            use_edns=edns if edns is not None else False,
            ednsflags=ednsflags,
            payload=4096 if edns is not None else None,
            options=options,
        )
        m.flags = flags
        m.set_opcode(opcode)
        return m

    return build


PROBES = [
    Probe("plain", "dig +norec +noedns soa ZONE", q(edns=None), edns=False),
    Probe("edns", "dig +norec +edns=0 +nocookie soa ZONE", q()),
    Probe("edns1", "dig +norec +edns=1 +noednsneg +nocookie soa ZONE", q(edns=1), expect=dns.rcode.BADVERS, soa=False),
    Probe(
        "ednsopt",
        "dig +norec +edns=0 +nocookie +ednsopt=100 soa ZONE",
        q(options=[dns.edns.GenericOption(UNKNOWN_OPTION, b"")]),
    ),
    Probe("ednsflags", "dig +norec +edns=0 +nocookie +ednsflags=0x80 soa ZONE", q(ednsflags=MBZ_FLAG)),
    Probe(
        "optlist",
        "dig +norec +edns=0 +nsid +subnet=0.0.0.0/0 +expire +cookie soa ZONE",
        q(
            options=[
                dns.edns.GenericOption(dns.edns.NSID, b""),
                dns.edns.ECSOption("0.0.0.0", 0),
                dns.edns.GenericOption(dns.edns.EXPIRE, b""),
                dns.edns.GenericOption(dns.edns.COOKIE, b"\x01\x02\x03\x04\x05\x06\x07\x08"),
            ]
        ),
    ),
    Probe("do", "dig +norec +edns=0 +nocookie +dnssec soa ZONE", q(ednsflags=dns.flags.DO)),
    Probe("cd", "dig +norec +edns=0 +nocookie +cd soa ZONE", q(flags=dns.flags.RD | dns.flags.CD)),
    Probe("ad", "dig +norec +edns=0 +nocookie +ad soa ZONE", q(flags=dns.flags.RD | dns.flags.AD)),
    Probe("tc", "dig +norec +edns=0 +nocookie +tcflag soa ZONE", q(flags=dns.flags.RD | dns.flags.TC)),
    Probe("zflag", "dig +norec +edns=0 +nocookie +zflag soa ZONE", q(flags=dns.flags.RD | Z_BIT)),
    Probe(
        "opcode",
        "dig +norec +edns=0 +nocookie +opcode=15 +header-only",
        q(opcode=15),
        expect=dns.rcode.NOTIMP,
        soa=False,
    ),
    Probe("type666", "dig +norec +edns=0 +nocookie type666 ZONE", q("TYPE666"), soa=False),
    Probe("ednstcp", "dig +norec +edns=0 +nocookie +tcp soa ZONE", q(), tcp=True),
    Probe(
        "cookie",
        "dig +norec +edns=0 +cookie soa ZONE",
        q(options=[dns.edns.GenericOption(dns.edns.COOKIE, b"\x01\x02\x03\x04\x05\x06\x07\x08")]),
    ),
    Probe(
        "nsid", "dig +norec +edns=0 +nocookie +nsid soa ZONE", q(options=[dns.edns.GenericOption(dns.edns.NSID, b"")])
    ),
    Probe(
        "subnet",
        "dig +norec +edns=0 +nocookie +subnet=0.0.0.0/0 soa ZONE",
        q(options=[dns.edns.ECSOption("0.0.0.0", 0)]),
    ),
    Probe(
        "expire",
        "dig +norec +edns=0 +nocookie +expire soa ZONE",
        q(options=[dns.edns.GenericOption(dns.edns.EXPIRE, b"")]),
    ),
]


def send(probe: Probe, port: int) -> dns.message.Message | None:
    msg = probe.build()
    wire = msg.to_wire()
    if probe.name == "opcode":  # header only: dnspython would keep the question
        wire = wire[:4] + b"\x00\x00" + wire[6:10] + wire[10:12] + wire[12 + len(ZONE.to_wire()) + 4 :]
    try:
        if probe.tcp:
            return dns.query.tcp(dns.message.from_wire(wire), "127.0.0.1", port=port, timeout=3)
        raw = _udp(wire, port)
        return None if raw is None else dns.message.from_wire(raw, ignore_trailing=True)
    except (dns.exception.Timeout, OSError, dns.exception.DNSException):
        return None


def _udp(wire: bytes, port: int) -> bytes | None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(wire, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def verdict(probe: Probe, r: dns.message.Message | None) -> list[str]:
    """genreport's checks: [] is ok."""
    if r is None:
        return ["timeout"]
    problems = []
    rcode = r.rcode()
    if rcode != probe.expect:
        problems.append(
            {
                dns.rcode.FORMERR: "formerr",
                dns.rcode.BADVERS: "badvers",
                dns.rcode.NOTIMP: "notimp",
                dns.rcode.REFUSED: "refused",
                dns.rcode.SERVFAIL: "servfail",
            }.get(rcode, "status")
        )
    has_soa = any(rr.rdtype == dns.rdatatype.SOA for rr in r.answer)
    if probe.soa and not has_soa:
        problems.append("nosoa")
    if not probe.soa and has_soa:
        problems.append("soa")
    if probe.edns and r.edns < 0 and probe.name != "opcode":
        problems.append("noopt")
    if not probe.edns and r.edns >= 0:
        problems.append("opt")
    if r.edns > 0:
        problems.append("version")
    if r.edns >= 0:
        if r.ednsflags & MBZ_FLAG:
            problems.append("mbz")
        if probe.name == "do" and not r.ednsflags & dns.flags.DO:
            problems.append("nodo")
        codes = {o.otype: o for o in r.options}
        if UNKNOWN_OPTION in codes:
            problems.append("echoed")
        cookie = codes.get(dns.edns.COOKIE)
        if cookie is not None and len(cookie.to_wire()) < 16:  # a client cookie echoed without a server cookie
            problems.append("echoed")
    if r.flags & Z_BIT:
        problems.append("zflag")
    return problems


def extras(r: dns.message.Message | None) -> str:
    """What else differs between servers, for the explanations: flags and options of the reply."""
    if r is None:
        return "-"
    flags = dns.flags.to_text(r.flags).lower()
    opts = ",".join(dns.edns.OptionType.to_text(o.otype) for o in r.options) if r.edns >= 0 else "no OPT"
    return f"{flags}; {opts or 'OPT'}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rg-conf-") as wd, Servers(Path(wd)) as servers:
        for probe in PROBES:
            row = {"probe": probe.name, "dig": probe.dig.replace("ZONE", ORIGIN)}
            for label, port in (("guard", servers.guard.port), ("unbound", servers.unbound.port)):
                reply = send(probe, port)
                row[label] = verdict(probe, reply)
                row[f"{label}_reply"] = extras(reply)
            rows.append(row)
    print(f"| probe | resolverguard | Unbound {servers.unbound_version} | guard reply | Unbound reply |")
    print("|---|---|---|---|---|")
    for row in rows:
        g, u = ",".join(row["guard"]) or "ok", ",".join(row["unbound"]) or "ok"
        print(f"| {row['probe']} | {g} | {u} | {row['guard_reply']} | {row['unbound_reply']} |")
    worse = [r["probe"] for r in rows if r["guard"] and not r["unbound"]]
    print(f"\nguard failures Unbound does not have: {', '.join(worse) or 'none'}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if worse else 0


if __name__ == "__main__":
    raise SystemExit(main())
