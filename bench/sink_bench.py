#!/usr/bin/env python3
"""SMTP sink under load: rejections per second with N concurrent sessions, and DNS cache hits meanwhile.

    python bench/sink_bench.py [--sessions 8] [--duration 10]   # issue 24: 8 clients flooding RCPT

One run: a stub upstream (tests/fakes.py) on 127.0.0.1, one `resolverguard serve` with the sink on, then
1. DNS alone: dnsperf (1,000 warm cache-hit names, -c 4 -q 100) for --duration seconds;
2. the sink alone: --sessions asyncio SMTP clients, each looping MAIL / RCPT <user@army.ml> / RSET
   (a new session when the per-command limit answers 421), counting 550 replies;
3. both at once: the same SMTP load while dnsperf runs again.
Rejections/s, DNS q/s, and the guard's CPU seconds (utime+stime from /proc/PID/stat) are printed as
markdown. Everything listens on 127.0.0.1 and is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from fakes import FakeUpstream, Guard, free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime+stime of the guard and its children (the sink process), ended children included (cutime)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += _ticks(int(child))
    return (total + _ticks(pid, dead_children=True)) / TICK


def _ticks(pid: int, dead_children: bool = False) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return sum(int(f) for f in fields[11 : 15 if dead_children else 13])


async def smtp_load(port: int, sessions: int, duration: float) -> tuple[int, int]:
    """(550 replies, other replies) from `sessions` clients looping RCPT for `duration` seconds."""
    end = time.monotonic() + duration
    counts = [0, 0]

    async def one() -> None:
        while time.monotonic() < end:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                await reader.readline()
                writer.write(b"EHLO bench.test\r\n")
                while not (await reader.readline()).startswith(b"250 "):
                    pass
                while time.monotonic() < end:
                    writer.write(b"MAIL FROM:<alice@sender.test>\r\nRCPT TO:<user@army.ml>\r\nRSET\r\n")
                    replies = [await reader.readline() for _ in range(3)]
                    if replies[1].startswith(b"550"):
                        counts[0] += 1
                    else:
                        counts[1] += 1
                    if any(r.startswith(b"421") or not r for r in replies):
                        break  # per-command limit reached: a new session
            finally:
                writer.close()

    await asyncio.gather(*(one() for _ in range(sessions)), return_exceptions=True)
    return counts[0], counts[1]


def dnsperf(port: int, names: Path, duration: float) -> float:
    out = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(names), "-c", "4", "-q", "100", "-l", str(duration)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--duration", type=float, default=10.0)
    args = ap.parse_args()
    if not shutil.which("dnsperf"):
        sys.exit("dnsperf is not installed (apt-get install dnsperf)")
    work = Path(tempfile.mkdtemp(prefix="rg-sink-bench-"))
    upstream = FakeUpstream()
    upstream.on("*", "A")  # unused: every name below is answered from the rule set up next
    names = work / "names.txt"
    names.write_text("".join(f"h{i}.bench.example A\n" for i in range(1000)))
    for i in range(1000):
        upstream.on(f"h{i}.bench.example", "A", f"h{i}.bench.example. 3600 A 192.0.2.1")
    sink_port = free_port()
    (work / "zones").mkdir()
    (work / "zones" / "bench.protect").write_text("army.mil\n")
    (work / "rg.toml").write_text(
        f'upstreams = ["{upstream.address}"]\n[typo]\naction = "sink"\n'
        f'[smtp_sink]\nlisten = ["127.0.0.1:{sink_port}"]\n'
    )
    guard = Guard(
        ["-c", str(work / "rg.toml"), "--zones", str(work / "zones"), "--events", "", "--listen", "127.0.0.1:0"],
        cwd=work,
    )
    try:
        dnsperf(guard.port, names, 2)  # warm the cache
        c0 = cpu_seconds(guard.proc.pid)
        dns_alone = dnsperf(guard.port, names, args.duration)
        c1 = cpu_seconds(guard.proc.pid)
        ok, other = asyncio.run(smtp_load(sink_port, args.sessions, args.duration))
        c2 = cpu_seconds(guard.proc.pid)
        result: dict = {}

        def load() -> None:
            result["smtp"] = asyncio.run(smtp_load(sink_port, args.sessions, args.duration + 2))

        t = threading.Thread(target=load)
        t.start()
        time.sleep(1)  # let the sessions open before dnsperf starts (a benchmark, not a test)
        dns_loaded = dnsperf(guard.port, names, args.duration)
        t.join()
        c3 = cpu_seconds(guard.proc.pid)
        ok2, other2 = result["smtp"]
    finally:
        guard.stop()
        upstream.close()
        shutil.rmtree(work, ignore_errors=True)
    d = args.duration
    print(
        f"| run ({args.sessions} SMTP sessions, {d:g} s each) | rejections/s | DNS cache-hit q/s | guard + sink process CPU s |"
    )
    print("|---|---|---|---|")
    print(f"| DNS alone | - | {dns_alone:,.0f} | {c1 - c0:.1f} |")
    print(f"| sink alone | {ok / d:,.0f} (other replies: {other}) | - | {c2 - c1:.1f} |")
    print(f"| both | {ok2 / (d + 2):,.0f} (other replies: {other2}) | {dns_loaded:,.0f} | {c3 - c2:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
