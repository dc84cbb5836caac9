"""Full AXFR of an N-rule policy from a running guard (TSIG-signed), and DNS q/s meanwhile vs alone.

    python bench/axfr_bench.py [--rules 100000] [--seconds 10]

Starts `resolverguard serve` on 127.0.0.1 (pinned to the last CPU; upstream: a closed loopback port, never
asked) with one override zone of N rules and a TSIG-protected export, waits until the export is published
(the guard logs how long rendering the transfer messages took), then:

1. times signed AXFRs from the query to the last message: a raw TCP client that only reads the frames
   (summing ANCOUNT until N + 3 RRs, so the client's own parsing is not timed), and `dig AXFR -y` (a C
   client that verifies every TSIG and parses every RR), if dig is installed;
2. runs dnsperf (blocked names, answered from the fast path) for --seconds alone, then for --seconds while
   the raw client repeats AXFRs back to back (--trials pairs, alternately), and prints both q/s, their
   ratio, and the best of each.

dnsperf and the clients run on the first CPU (taskset). Stops the guard by PID; everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rdatatype
import dns.tsigkeyring

ORIGIN = "rpz.resolverguard."
KEY = "bench-key."
SECRET = base64.b64encode(os.urandom(32)).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu: int | None, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *cmd] if cpu is not None and shutil.which("taskset") else cmd


def wait_line(lines: list[str], pattern: str, seconds: float, proc: subprocess.Popen, start: int = 0) -> re.Match:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        for line in lines[start:]:
            if m := re.search(pattern, line):
                return m
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {pattern!r}:\n" + "".join(lines[-20:]))


@contextlib.contextmanager
def bulk_guard(rules: int, cpu: int | None = None, cwd: str | None = None) -> Iterator[tuple]:
    """(state root, DNS port, log lines, process) of a guard with one override zone of ``rules`` rules and a
    TSIG-protected export (key KEY, secret SECRET); stopped by PID and its directory removed at the end."""
    with tempfile.TemporaryDirectory(prefix="rg-export-bench-") as tmp:
        root = Path(tmp)
        zones = root / "zones"
        zones.mkdir()
        with open(zones / "10-bulk.rpz", "w") as fh:
            fh.write("$ORIGIN bulk.\n$TTL 300\n@ SOA ns.invalid. h.invalid. 1 3600 600 86400 60\n  NS ns.invalid.\n")
            for i in range(rules):
                fh.write(f"r{i}.bulk-bench.example CNAME .\n")
        secret = root / "key"
        secret.write_text(SECRET)
        secret.chmod(0o600)
        cfg = root / "guard.toml"
        cfg.write_text(
            f'upstreams = ["127.0.0.1:{free_port()}"]\nzones_dir = "{zones}"\n[log]\nevents = ""\n'
            f'[export]\nstate_dir = "{root / "state"}"\ntsig = {{ name = "{KEY}", secret_file = "{secret}" }}\n'
        )
        port = free_port()
        flags = ["--config", str(cfg), "--listen", f"127.0.0.1:{port}", "--allow-empty"]
        argv = pinned(cpu, [sys.executable, "-m", "resolverguard", "serve", *flags])
        proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
        try:
            yield root, port, lines, proc
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(60)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the guard closed the transfer")
        buf += chunk
    return bytes(buf)


def raw_axfr(port: int, rrs: int) -> tuple[float, int, int]:
    """(seconds, messages, bytes) of one signed AXFR, reading frames until ``rrs`` answer RRs arrived."""
    query = dns.message.make_query(ORIGIN, dns.rdatatype.AXFR)
    query.use_tsig(dns.tsigkeyring.from_text({KEY: SECRET}), KEY)
    data = query.to_wire()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=600) as sock:
        sock.sendall(struct.pack("!H", len(data)) + data)
        seen = messages = size = 0
        while seen < rrs:
            (length,) = struct.unpack("!H", recv_exact(sock, 2))
            message = recv_exact(sock, length)
            if message[3] & 0xF:
                raise SystemExit(f"AXFR answered rcode {message[3] & 0xF}")
            seen += struct.unpack("!H", message[6:8])[0]
            messages += 1
            size += length
    return time.perf_counter() - started, messages, size


def dig_axfr(port: int, cpu: int | None) -> tuple[float, int] | None:
    dig = shutil.which("dig")
    if dig is None:
        return None
    cmd = [dig, "-p", str(port), "@127.0.0.1", "-y", f"hmac-sha256:{KEY}:{SECRET}", ORIGIN, "AXFR", "+noall", "+answer"]
    started = time.perf_counter()
    out = subprocess.run(pinned(cpu, cmd), capture_output=True, text=True, check=True).stdout
    seconds = time.perf_counter() - started
    if "failed" in out or "BADSIG" in out or "tsig verify failure" in out.lower():
        raise SystemExit(f"dig: {out[-500:]}")
    return seconds, sum(1 for line in out.splitlines() if line and not line.startswith(";"))


def dnsperf(port: int, datafile: Path, seconds: float, cpu: int | None) -> float:
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(datafile), "-c", "4", "-q", "100"]
    cmd += ["-t", "2", "-l", str(seconds)]
    out = subprocess.run(pinned(cpu, cmd), capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3, help="raw AXFRs timed one after the other")
    ap.add_argument("--cwd", default=None, help="run the guard from this checkout (compare with another commit)")
    ap.add_argument("--trials", type=int, default=2, help="dnsperf alone / during AXFRs pairs")
    args = ap.parse_args()
    cpus = os.cpu_count() or 1
    guard_cpu, client_cpu = (cpus - 1, 0) if cpus > 1 else (None, None)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})  # this process reads the AXFRs: beside dnsperf, not the guard
    with bulk_guard(args.rules, guard_cpu, args.cwd) as (root, port, lines, proc):
        queries = root / "queries.txt"
        queries.write_text(
            "".join(f"r{i}.bulk-bench.example A\n" for i in range(0, args.rules, max(1, args.rules // 50)))
        )
        t0 = time.monotonic()
        wait_line(lines, r"rpz export published", 1800, proc)
        print(f"rules={args.rules} start + first publication: {time.monotonic() - t0:.1f} s")
        rendered = [line.strip() for line in lines if "rpz export transfer rendered" in line]
        print("guard:", rendered[0] if rendered else "(renders each transfer)")
        rrs = args.rules + 3  # SOA, NS, the rules, SOA
        for _ in range(args.repeat):
            s, n, size = raw_axfr(port, rrs)
            print(f"AXFR raw client: {s:.3f} s, {n} messages, {size / 1e6:.1f} MB, {rrs} RRs")
        if (dug := dig_axfr(port, client_cpu)) is not None:
            print(f"AXFR dig (TSIG verified, every RR parsed and printed): {dug[0]:.2f} s, {dug[1]} RRs")
        if shutil.which("dnsperf"):
            dnsperf(port, queries, 2, client_cpu)  # warm: every name remembered by the fast path
            best_alone = best_during = 0.0
            for trial in range(args.trials):  # alternately, so a change in the machine's load hits both
                alone = dnsperf(port, queries, args.seconds, client_cpu)
                stop, done = threading.Event(), []

                def transfers(stop: threading.Event = stop, done: list = done) -> None:
                    while not stop.is_set():
                        done.append(raw_axfr(port, rrs)[0])

                worker = threading.Thread(target=transfers, daemon=True)
                worker.start()
                during = dnsperf(port, queries, args.seconds, client_cpu)
                stop.set()
                worker.join(600)
                mean = sum(done) / max(1, len(done))
                print(
                    f"trial {trial + 1}: DNS q/s alone {alone:.0f}, during back-to-back AXFRs {during:.0f} "
                    f"({during / alone:.0%} of alone; {len(done)} AXFRs, mean {mean:.3f} s)"
                )
                best_alone, best_during = max(best_alone, alone), max(best_during, during)
            print(
                f"best of {args.trials}: alone {best_alone:.0f} q/s, during AXFRs {best_during:.0f} q/s "
                f"({best_during / best_alone:.0%})"
            )
        print("guard log:", *[line.strip() for line in lines if "transfer kind=axfr" in line][:3], sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
