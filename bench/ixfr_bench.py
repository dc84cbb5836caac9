"""IXFR of a one-rule change to a 1M-rule policy, from a running guard, TSIG-signed; AXFR for comparison.

    python bench/ixfr_bench.py [--rules 1000000]

Starts `resolverguard serve` on 127.0.0.1 (upstream: a closed loopback port, never asked) with one
override zone of N rules, waits until the export is published, appends one rule to the zone file,
waits for the next serial, then times (wall clock, client side) a signed IXFR from the old serial and a
signed AXFR, each from the query to the last message verified by dnspython. Stops the guard by PID.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dns.query
import dns.rdatatype
import dns.tsigkeyring

ORIGIN = "rpz.resolverguard."
SECRET = base64.b64encode(os.urandom(32)).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_line(
    lines: list[str], pattern: str, seconds: float, start: int = 0, proc: subprocess.Popen | None = None
) -> re.Match:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        for line in lines[start:]:
            if m := re.search(pattern, line):
                return m
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {pattern!r}:\n" + "".join(lines[-20:]))


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
            keyname="bench-key.",
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
    with tempfile.TemporaryDirectory(prefix="rg-ixfr-") as tmp:
        root = Path(tmp)
        zones = root / "zones"
        zones.mkdir()
        rpz = zones / "10-bulk.rpz"
        with open(rpz, "w") as fh:
            fh.write("$ORIGIN bulk.\n$TTL 300\n@ SOA ns.invalid. h.invalid. 1 3600 600 86400 60\n  NS ns.invalid.\n")
            for i in range(args.rules):
                fh.write(f"r{i}.bulk-bench.example CNAME .\n")
        secret = root / "key"
        secret.write_text(SECRET)
        secret.chmod(0o600)
        cfg = root / "guard.toml"
        cfg.write_text(
            f'upstreams = ["127.0.0.1:{free_port()}"]\nzones_dir = "{zones}"\n[log]\nevents = ""\n'
            f'[export]\nstate_dir = "{root / "state"}"\n'
            f'tsig = {{ name = "bench-key.", secret_file = "{secret}" }}\n'
        )
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "resolverguard",
                "serve",
                "--config",
                str(cfg),
                "--listen",
                f"127.0.0.1:{port}",
                "--allow-empty",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
        try:
            t0 = time.monotonic()
            first = int(wait_line(lines, r"rpz export published .* serial=(\d+)", 900, proc=proc).group(1))
            print(f"rules={args.rules} start+first publication: {time.monotonic() - t0:.1f} s")
            mark = len(lines)
            with open(rpz, "a") as fh:
                fh.write("one-more.bulk-bench.example CNAME .\n")
            t1 = time.monotonic()
            second = int(wait_line(lines, r"rpz export published .* serial=(\d+)", 900, mark, proc).group(1))
            print(f"reload + rebuild + journal delta: {time.monotonic() - t1:.1f} s (serial {first} -> {second})")
            keyring = dns.tsigkeyring.from_text({"bench-key.": SECRET})
            for _ in range(3):
                s, n, rrs = timed_xfr(port, keyring, "IXFR", first)
                print(f"IXFR one-rule change: {s * 1000:.1f} ms, {n} message(s), {rrs} RRs")
            s, n, rrs = timed_xfr(port, keyring, "AXFR")
            print(f"AXFR for comparison: {s:.2f} s, {n} messages, {rrs} RRs")
            print("guard log:", *[line.strip() for line in lines if "transfer kind=" in line], sep="\n  ")
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
