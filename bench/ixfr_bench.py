"""IXFR of a one-rule change to a 1M-rule policy, from a running guard, TSIG-signed; AXFR for comparison.

    python bench/ixfr_bench.py [--rules 1000000]

Starts `resolverguard serve` on 127.0.0.1 (upstream: a closed loopback port, never asked) with one
override zone of N rules, waits until the export is published, appends one rule to the zone file,
waits for the next serial, then times (wall clock, client side) a signed IXFR from the old serial and a
signed AXFR, each from the query to the last message verified by dnspython. Stops the guard by PID.
"""

from __future__ import annotations

import argparse
import sys
import time

import dns.query
import dns.rdatatype
import dns.tsigkeyring
from axfr_bench import KEY, ORIGIN, SECRET, bulk_guard, wait_line


def timed_xfr(port: int, keyring: dict, rdtype: str, serial: int | None = None) -> tuple[float, int, int]:
    """(seconds, messages, answer RRs) of one signed transfer over TCP."""
    started = time.perf_counter()
    messages = list(
        dns.query.xfr(
            "127.0.0.1",
            ORIGIN,
            rdtype=dns.rdatatype.from_text(rdtype),
            port=port,
            keyring=keyring,
            keyname=KEY,
            serial=serial or 0,
            lifetime=600,
            relativize=False,
        )
    )
    seconds = time.perf_counter() - started
    return seconds, len(messages), sum(len(rr) for m in messages for rr in m.answer)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=1_000_000)
    args = ap.parse_args()
    with bulk_guard(args.rules) as (root, port, lines, proc):
        t0 = time.monotonic()
        first = int(wait_line(lines, r"rpz export published .* serial=(\d+)", 900, proc).group(1))
        print(f"rules={args.rules} start+first publication: {time.monotonic() - t0:.1f} s")
        mark = len(lines)
        with open(root / "zones" / "10-bulk.rpz", "a") as fh:
            fh.write("one-more.bulk-bench.example CNAME .\n")
        t1 = time.monotonic()
        second = int(wait_line(lines, r"rpz export published .* serial=(\d+)", 900, proc, mark).group(1))
        print(f"reload + rebuild + journal delta: {time.monotonic() - t1:.1f} s (serial {first} -> {second})")
        keyring = dns.tsigkeyring.from_text({KEY: SECRET})
        for _ in range(3):
            s, n, rrs = timed_xfr(port, keyring, "IXFR", first)
            print(f"IXFR one-rule change: {s * 1000:.1f} ms, {n} message(s), {rrs} RRs")
        s, n, rrs = timed_xfr(port, keyring, "AXFR")
        print(
            f"AXFR for comparison (dnspython client, parses and verifies every RR): {s:.2f} s, {n} messages, {rrs} RRs"
        )
        print("guard log:", *[line.strip() for line in lines if "transfer kind=" in line], sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
