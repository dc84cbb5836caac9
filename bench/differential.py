#!/usr/bin/env python3
"""Differential comparison, resolverguard vs Unbound forwarding to the same NSD: 1,620 name/type pairs in six
EDNS variants; prints the differences by class.

    python bench/differential.py [--json FILE]

Variants (as respdiff's): DO+4096, EDNS 1232, no EDNS, DO+512, CD (EDNS 1232), mixed case (EDNS 1232).
Compared per query: rcode, header flags, answer RRsets (TTL aside), authority and additional record types,
OPT presence, the question as echoed; TTLs only for the cap (none above 86400). NSD, Unbound and the guard
run on high loopback ports and are stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import RUNNING, start_guard, start_nsd, start_unbound  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "conf.example."
NAMES = 270
TYPES = ("A", "AAAA", "MX", "TXT", "CNAME", "SOA")
VARIANTS = {
    "do4096": dict(use_edns=0, payload=4096, want_dnssec=True),
    "edns1232": dict(use_edns=0, payload=1232),
    "noedns": dict(use_edns=False),
    "do512": dict(use_edns=0, payload=512, want_dnssec=True),
    "cd": dict(use_edns=0, payload=1232, cd=True),
    "mixedcase": dict(use_edns=0, payload=1232, mixed=True),
}


def zone_text() -> str:
    """conf.example: small and big answers, CNAMEs, long TXT (SPF-like), 20-address RRsets, NXDOMAIN gaps."""
    lines = [
        f"$ORIGIN {ORIGIN}",
        "$TTL 3600",
        "@ IN SOA ns hostmaster 1 3600 600 86400 300",
        "@ IN NS ns",
        "ns IN A 127.0.0.1",
        "@ IN MX 10 mx",
        "mx IN A 192.0.2.25",
        "long IN A 192.0.2.26",
        'long 604800 IN TXT "a week"',
    ]
    for i in range(NAMES):
        kind = i % 9
        h = f"h{i}"
        if kind == 0:
            lines += [f"{h} IN A 192.0.2.{i % 250 + 1}", f"{h} IN AAAA 2001:db8::{i:x}"]
        elif kind == 1:
            lines += [f"{h} IN MX 10 mx", f"{h} IN A 192.0.2.{i % 250 + 1}"]
        elif kind == 2:
            lines += [f'{h} IN TXT "v=spf1 ip4:192.0.2.{i % 250}/32 -all"']
        elif kind == 3:  # SPF/DKIM-sized: over 512 octets
            parts = " ".join(f'"k{j}={"x" * 200}"' for j in range(3))
            lines += [f"{h} IN TXT {parts}"]
        elif kind == 4:
            lines += [f"{h} IN CNAME h{i - 4}"]
        elif kind == 5:
            lines += [f"{h} IN A 198.51.100.{j}" for j in range(1, 41)]
        elif kind == 6:
            lines += [f"{h} IN AAAA 2001:db8:{i:x}::1", f"{h} 604800 IN A 192.0.2.77"]
        elif kind == 7:
            lines += [f"sub.{h} IN A 192.0.2.99"]  # h7 itself: an empty non-terminal (NODATA)
        # kind 8: nothing (NXDOMAIN)
    return "\n".join(lines) + "\n"


class Servers:
    """NSD with conf.example, Unbound and resolverguard forwarding to it; a context manager stopping all by PID."""

    def __init__(self, wd: Path) -> None:
        self.wd = wd

    def __enter__(self) -> Servers:
        try:
            self.nsd = self._nsd()
            self.unbound = self._unbound()
            self.guard = self._guard()
        except BaseException:  # __exit__ is not called when __enter__ fails: stop what did start
            self.__exit__()
            raise
        out = subprocess.run([_which("unbound"), "-V"], capture_output=True, text=True).stdout.split()
        self.unbound_version = out[1] if len(out) > 1 else "?"
        return self

    def __exit__(self, *exc) -> None:
        for proc in reversed(RUNNING):
            proc.stop()
        RUNNING.clear()

    def _nsd(self):
        return start_nsd(self.wd, _which("nsd"), 0, ORIGIN.rstrip("."), zone_text(), f"h0.{ORIGIN}")

    def _unbound(self):
        return start_unbound(
            self.wd, "diff", _which("unbound"), self.nsd.port, 0, f"h0.{ORIGIN}", dns.rcode.NOERROR, 60
        )[0]

    def _guard(self):
        return start_guard(self.wd, "diff", ROOT / "zones", self.nsd.port, 0, f"h0.{ORIGIN}", dns.rcode.NOERROR, 60)[0]


def _which(prog: str) -> str:
    import shutil

    path = shutil.which(prog) or shutil.which(prog, path="/usr/sbin:/sbin")
    if path is None:
        raise SystemExit(f"{prog} is not installed (apt-get install {prog})")
    return path


def make(name: str, rdtype: str, variant: str, rng: random.Random) -> dns.message.Message:
    kw = dict(VARIANTS[variant])
    cd, mixed = kw.pop("cd", False), kw.pop("mixed", False)
    if mixed:
        name = "".join(c.upper() if rng.random() < 0.5 else c for c in name)
    m = dns.message.make_query(name, rdtype, **kw)
    if cd:
        m.flags |= dns.flags.CD
    return m


def ask(m: dns.message.Message, port: int) -> dns.message.Message | None:
    try:
        return dns.query.udp(m, "127.0.0.1", port=port, timeout=3, ignore_unexpected=True)
    except (dns.exception.Timeout, OSError, dns.exception.DNSException):
        return None


def shape(m: dns.message.Message, r: dns.message.Message | None) -> dict:
    if r is None:
        return {"timeout": True}
    return {
        "rcode": dns.rcode.to_text(r.rcode()),
        "flags": sorted(dns.flags.to_text(r.flags).split()),
        "answer": sorted(
            f"{rr.name} {dns.rdatatype.to_text(rr.rdtype)} {sorted(x.to_text() for x in rr)}" for rr in r.answer
        ),
        "authority": sorted(dns.rdatatype.to_text(rr.rdtype) for rr in r.authority),
        "additional": sorted(dns.rdatatype.to_text(rr.rdtype) for rr in r.additional),
        "opt": r.edns >= 0,
        "question": r.question[0].name.to_text() if r.question else "",
        "ttl_over_cap": any(rr.ttl > 86400 for rr in r.answer),
        "question_sent": m.question[0].name.to_text(),
    }


def classify(g: dict, u: dict) -> list[str]:
    """The classes of difference between the guard's (g) and Unbound's (u) reply shapes."""
    if g.get("timeout") or u.get("timeout"):
        return [] if g.get("timeout") == u.get("timeout") else ["timeout"]
    out = []
    for key in ("rcode", "answer", "opt"):
        if g[key] != u[key]:
            out.append(key)
    for flag in sorted(set(g["flags"]) ^ set(u["flags"])):
        out.append(f"flag {flag}: {'guard' if flag in g['flags'] else 'unbound'} only")
    if g["authority"] != u["authority"]:
        out.append("authority")
    if g["additional"] != u["additional"]:
        out.append("additional")
    if (g["question"] == g["question_sent"]) != (u["question"] == u["question_sent"]):
        out.append("question case")
    if g["ttl_over_cap"] != u["ttl_over_cap"]:
        out.append("ttl cap")
    return out


def main() -> int:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    pairs = [(f"h{i}.{ORIGIN}", t) for i in range(NAMES) for t in TYPES]
    rng = random.Random(13)
    jobs = [(n, t, v, make(n, t, v, rng)) for v in VARIANTS for n, t in pairs]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rg-diff-") as wd, Servers(Path(wd)) as servers:
        with ThreadPoolExecutor(8) as pool:
            g = list(pool.map(lambda j: shape(j[3], ask(j[3], servers.guard.port)), jobs))
            u = list(pool.map(lambda j: shape(j[3], ask(j[3], servers.unbound.port)), jobs))
    by_class: Counter[str] = Counter()
    by_variant: dict[str, Counter[str]] = {v: Counter() for v in VARIANTS}
    examples: dict[str, str] = {}
    same = 0
    for (n, t, v, _), gs, us in zip(jobs, g, u):
        diff = classify(gs, us)
        if not diff:
            same += 1
        for c in diff:
            by_class[c] += 1
            by_variant[v][c] += 1
            examples.setdefault(c, f"{n} {t} {v}: guard {gs} / unbound {us}")
    print(
        f"{len(pairs)} name/type pairs x {len(VARIANTS)} variants = {len(jobs)} queries per server, "
        f"{time.monotonic() - started:.0f} s; identical: {same}"
    )
    print("\n| class of difference | " + " | ".join(VARIANTS) + " | total |")
    print("|---|" + "---|" * (len(VARIANTS) + 1))
    for c, total in by_class.most_common():
        print(f"| {c} | " + " | ".join(str(by_variant[v][c]) for v in VARIANTS) + f" | {total} |")
    print()
    for c, ex in examples.items():
        print(f"- {c}: e.g. {ex}")
    if args.json:
        Path(args.json).write_text(json.dumps({"classes": by_class, "examples": examples}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
