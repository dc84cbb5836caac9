#!/usr/bin/env python3
"""Side-by-side benchmark: resolverguard vs Unbound, both forwarding to a local NSD; one command.

    bench/run.sh [--duration 6] [--repeat 2] [--rules 100000,1000000] [--workers 1,2] [--cache-fill 1000000]
                 [--out bench/results.md]

What one run does (about 8 minutes on 2 cores):

1. installs dnsperf, unbound and nsd from Debian if a program is missing (apt-get, services not started);
2. starts NSD on 127.0.0.1 with a wildcard zone ``bench.example`` (every name answers A/AAAA, TTL 3600);
3. exports the policy of ``zones/`` (protected domains and overrides) with ``resolverguard export-rpz``
   and gives that RPZ to Unbound, so both servers block the same names;
4. starts ``resolverguard serve`` and ``unbound`` (one thread), each forwarding to NSD; servers are
   pinned to the last CPU, dnsperf and NSD to the first (taskset);
5. for each scenario runs dnsperf against resolverguard, then Unbound, --repeat times alternately, and keeps
   each server's run with the most queries per CPU-second (other jobs on a shared host only ever make a
   run worse): cache-hit (1,000 warm names), blocked (100% typo neighbours), mixed (90% cache hits, 10% typo
   neighbours), cache-miss (unique names, fresh ones in every repetition); then one fixed-rate run each at
   1,000 q/s (dnsperf -Q 1000) for p99 latency;
6. cache-hit QPS with 1 and 2 guard workers (--workers) and Unbound threads, nothing pinned (--workers);
7. RSS with 1M cached answers and bytes per entry for both servers (--cache-fill);
8. measures policy load time (process start until the last rule answers NXDOMAIN) and RSS for 100k and
   1M QNAME rules (an RPZ file in a zones directory) for both servers;
9. writes a markdown report (machine, commands, tables, ratios) and a JSON file beside it.

Queries per server CPU-second = completed queries / (utime+stime delta of the server process from
/proc/PID/stat over the dnsperf run). Latency percentiles come from dnsperf -v (one line per query).
Every process started here is stopped by its PID. Nothing listens outside 127.0.0.1.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

REPO = Path(__file__).resolve().parent.parent
TOOLS = {
    "dnsperf": "dnsperf",
    "unbound": "unbound",
    "unbound-control": "unbound",
    "nsd": "nsd",
}  # program -> Debian package
TICK = os.sysconf("SC_CLK_TCK")
HIT_NAMES = 1000


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- tools and processes


def which(prog: str) -> str | None:
    return shutil.which(prog) or shutil.which(prog, path="/usr/sbin:/usr/local/sbin:/sbin")


def ensure_tools() -> dict[str, str]:
    """Install the Debian packages of missing programs; never start their services (policy-rc.d 101)."""
    missing = sorted({pkg for prog, pkg in TOOLS.items() if which(prog) is None})
    if missing:
        if os.geteuid() != 0:
            sys.exit(f"missing {', '.join(missing)}; run as root or: apt-get install -y {' '.join(missing)}")
        policy = Path("/usr/sbin/policy-rc.d")
        if not policy.exists():
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        log(f"installing {' '.join(missing)}")
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
        if subprocess.run(cmd, env=env).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, check=True)
            subprocess.run(cmd, env=env, check=True)
    found = {prog: which(prog) for prog in TOOLS}
    if None in found.values() or which("taskset") is None:
        sys.exit(f"programs still missing: {found}")
    return found  # type: ignore[return-value]


def free_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    port: int

    @property
    def pid(self) -> int:
        return self.popen.pid

    def pids(self) -> list[int]:
        """The process and its descendants (the workers of `serve --workers N`)."""
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as fh:
                        todo += [int(x) for x in fh.read().split()]
            except OSError:  # exited meanwhile
                pass
        return found

    def cpu(self) -> float:
        """utime+stime of the process and its descendants (all threads), in seconds."""
        ticks = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])
        return ticks / TICK

    def rss(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in KiB."""
        vals = {}
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    vals[key] = int(rest.split()[0])
        return vals["VmRSS"], vals["VmHWM"]

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(10)


RUNNING: list[Proc] = []


def pinned(cpu: int | None, cmd: list[str]) -> list[str]:
    """cmd run on one CPU (taskset execs it: the PID stays the program's); cpu None: anywhere."""
    return cmd if cpu is None else ["taskset", "-c", str(cpu), *cmd]


def start(name: str, cmd: list[str], port: int, cpu: int | None, logfile: Path) -> Proc:
    with open(logfile, "wb") as out:
        popen = subprocess.Popen(
            pinned(cpu, cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    proc = Proc(name, popen, port)  # taskset execs the command: the PID is the server's
    RUNNING.append(proc)
    return proc


def ask(port: int, qname: str, rdtype: str = "A", timeout: float = 0.5) -> int | None:
    try:
        return dns.query.udp(dns.message.make_query(qname, rdtype), "127.0.0.1", port=port, timeout=timeout).rcode()
    except (dns.exception.Timeout, OSError, dns.exception.DNSException):
        return None


def wait_ready(proc: Proc, qname: str, want: int, timeout: float, logfile: Path) -> float:
    """Seconds from now until qname answers with rcode want; the poll interval is 20 ms."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.popen.poll() is not None:
            raise RuntimeError(
                f"{proc.name} exited {proc.popen.returncode}:\n{logfile.read_text(errors='replace')[-3000:]}"
            )
        if ask(proc.port, qname, timeout=0.2) == want:
            return time.monotonic() - t0
        time.sleep(0.02)
    raise RuntimeError(f"{proc.name} not ready after {timeout}s:\n{logfile.read_text(errors='replace')[-3000:]}")


# ---------------------------------------------------------------- servers


ZONE = """$ORIGIN bench.example.
$TTL 3600
@ IN SOA ns.bench.example. hostmaster.bench.example. 1 3600 600 86400 3600
@ IN NS ns.bench.example.
ns IN A 127.0.0.1
* IN A 192.0.2.1
* IN AAAA 2001:db8::1
"""


def start_nsd(
    wd: Path, nsd: str, cpu: int, zone: str = "bench.example", text: str = ZONE, ready: str = "ready.bench.example."
) -> Proc:
    """NSD on a free 127.0.0.1 port serving one zone (bench/differential.py serves its own), rate limiting off."""
    d = wd / "nsd"
    d.mkdir()
    (d / f"{zone}.zone").write_text(text)
    port = free_port()
    (d / "nsd.conf").write_text(f"""server:
    ip-address: 127.0.0.1
    port: {port}
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{d}"
    database: ""
    zonelistfile: "{d}/zone.list"
    xfrdfile: "{d}/xfrd.state"
    xfrdir: "{d}"
    pidfile: "{d}/nsd.pid"
    logfile: "{d}/nsd.log"
    verbosity: 0
    do-ip6: no
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: "{zone}"
    zonefile: "{zone}.zone"
""")
    proc = start("nsd", [nsd, "-d", "-c", str(d / "nsd.conf")], port, cpu, d / "stdout.log")
    wait_ready(proc, ready, dns.rcode.NOERROR, 20, d / "stdout.log")
    return proc


def unbound_conf(
    d: Path,
    port: int,
    upstream: int,
    rpz_name: str | None = None,
    rpz_file: Path | None = None,
    *,
    threads: int = 1,
    server: str = "",
    control: int | None = None,
    rpz_log: bool = False,
) -> str:
    """Unbound forwarding "." to 127.0.0.1@upstream; with the RPZ when rpz_name is given (respip module);
    `server`: more lines for the server: clause; control: unbound-control on that 127.0.0.1 port (no TLS)."""
    modules = "respip iterator" if rpz_name else "iterator"
    rpz = (
        f"""rpz:
    name: "{rpz_name}"
    zonefile: "{rpz_file}"
    rpz-log: {"yes" if rpz_log else "no"}
"""
        if rpz_name
        else ""
    )
    remote = (
        f"""    control-enable: yes
    control-interface: 127.0.0.1
    control-port: {control}
    control-use-cert: no"""
        if control
        else "    control-enable: no"
    )
    return f"""server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    logfile: "{d}/unbound.log"
    use-syslog: no
    verbosity: 0
    num-threads: {threads}
    module-config: "{modules}"
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    qname-minimisation: no
    prefetch: no
{server}remote-control:
{remote}
{rpz}forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{upstream}
"""


def start_unbound(
    wd: Path,
    tag: str,
    unbound: str,
    upstream: int,
    cpu: int | None,
    ready_name: str,
    ready_rcode: int,
    timeout: float = 600,
    **conf,
) -> tuple[Proc, float]:
    """Unbound in wd/unbound-TAG; conf: unbound_conf's keywords (rpz_name, rpz_file, threads, server, control)."""
    d = wd / f"unbound-{tag}"
    d.mkdir()
    port = free_port()
    (d / "unbound.conf").write_text(unbound_conf(d, port, upstream, **conf))
    t0 = time.monotonic()
    proc = start(f"unbound-{tag}", [unbound, "-d", "-c", str(d / "unbound.conf")], port, cpu, d / "stdout.log")
    wait_ready(proc, ready_name, ready_rcode, timeout, d / "stdout.log")
    return proc, time.monotonic() - t0


def start_guard(
    wd: Path,
    tag: str,
    zones: Path,
    upstream: int,
    cpu: int | None,
    ready_name: str,
    ready_rcode: int,
    timeout: float = 600,
    extra: tuple[str, ...] = (),
) -> tuple[Proc, float]:
    """`resolverguard serve` in wd/guard-TAG forwarding to 127.0.0.1@upstream; extra: more `serve` options."""
    d = wd / f"guard-{tag}"
    d.mkdir()
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "resolverguard",
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--upstream",
        f"127.0.0.1:{upstream}",
        "--zones",
        str(zones),
        "--events",
        "",
        "--log-level",
        "WARNING",
        *extra,
    ]
    t0 = time.monotonic()
    proc = start(f"resolverguard-{tag}", cmd, port, cpu, d / "stdout.log")
    wait_ready(proc, ready_name, ready_rcode, timeout, d / "stdout.log")
    return proc, time.monotonic() - t0


def start_echo(wd: Path, cpu: int) -> Proc:
    """bench/echo.py: the bare Python ceiling (fixed reply, ID patched), pinned like the servers."""
    d = wd / "echo"
    d.mkdir()
    port = free_port()
    proc = start(
        "python-echo", [sys.executable, str(REPO / "bench" / "echo.py"), str(port)], port, cpu, d / "stdout.log"
    )
    wait_ready(proc, "h0.bench.example.", dns.rcode.NOERROR, 30, d / "stdout.log")
    return proc


# ---------------------------------------------------------------- query files and dnsperf


def write_names(path: Path, names: list[str], rdtype: str = "A") -> Path:
    path.write_text("".join(f"{n} {rdtype}\n" for n in names))
    return path


def typo_names(export: Path, overrides: set[str]) -> list[str]:
    """Exact-name NXDOMAIN rules of the exported RPZ that come from the detector (not the overrides)."""
    names = []
    for line in export.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[-2:] == ["CNAME", "."] and not parts[0].startswith(("*", ";", "@", "$")):
            if parts[0] not in overrides:
                names.append(parts[0] + ".")
    return names


@dataclass
class Run:
    server: str
    scenario: str
    sent: int = 0
    completed: int = 0
    lost: int = 0
    seconds: float = 0.0
    qps: float = 0.0
    cpu: float = 0.0
    per_cpu: float = 0.0
    rcodes: str = ""
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    max_ms: float = 0.0
    request_bytes: str = ""
    extra: dict = field(default_factory=dict)


def dnsperf(
    dnsperf_bin: str,
    cpu: int | None,
    port: int,
    datafile: Path,
    *,
    seconds: float | None = None,
    once: bool = False,
    rate: int | None = None,
    verbose: bool = True,
    outstanding: int = 100,
    clients: int = 4,
) -> tuple[dict, list[float]]:
    cmd = [
        dnsperf_bin,
        "-s",
        "127.0.0.1",
        "-p",
        str(port),
        "-d",
        str(datafile),
        "-c",
        str(clients),
        "-q",
        str(outstanding),
        "-t",
        "2",
    ]
    if seconds:
        cmd += ["-l", str(seconds)]
    if once:
        cmd += ["-n", "1"]
    if rate:
        cmd += ["-Q", str(rate)]
    if verbose:
        cmd += ["-v"]
    out = subprocess.run(pinned(cpu, cmd), capture_output=True, text=True, check=True).stdout
    stats: dict = {}
    lat: list[float] = []
    for line in out.splitlines():
        if line.startswith("> "):
            lat.append(float(line.rsplit(" ", 1)[1]))
            continue
        key, _, val = line.strip().partition(":")
        val = val.strip()
        if key == "Queries sent":
            stats["sent"] = int(val)
        elif key == "Queries completed":
            stats["completed"] = int(val.split()[0])
        elif key == "Queries lost":
            stats["lost"] = int(val.split()[0])
        elif key == "Run time (s)":
            stats["seconds"] = float(val)
        elif key == "Queries per second":
            stats["qps"] = float(val)
        elif key == "Response codes":
            stats["rcodes"] = val
        elif key == "Average packet size":
            stats["sizes"] = val
    return stats, lat


def pct(sorted_lat: list[float], p: float) -> float:
    if not sorted_lat:
        return 0.0
    return sorted_lat[min(len(sorted_lat) - 1, int(p / 100 * len(sorted_lat)))] * 1000


def measure(server: Proc, label: str, scenario: str, dp: str, cpu: int | None, datafile: Path, **kw) -> Run:
    c0 = server.cpu()
    stats, lat = dnsperf(dp, cpu, server.port, datafile, **kw)
    used = server.cpu() - c0
    lat.sort()
    run = Run(
        label,
        scenario,
        stats.get("sent", 0),
        stats.get("completed", 0),
        stats.get("lost", 0),
        stats.get("seconds", 0.0),
        stats.get("qps", 0.0),
        used,
        stats.get("completed", 0) / used if used > 0 else 0.0,
        stats.get("rcodes", ""),
        pct(lat, 50),
        pct(lat, 90),
        pct(lat, 99),
        pct(lat, 99.9),
        (lat[-1] * 1000 if lat else 0.0),
        stats.get("sizes", ""),
    )
    log(
        f"{label:13} {scenario:12} qps={run.qps:9.0f} cpu={used:6.2f}s q/cpu-s={run.per_cpu:9.0f} "
        f"lost={run.lost} p50={run.p50_ms:.3f}ms p99={run.p99_ms:.3f}ms rcodes={run.rcodes}"
    )
    return run


def best_of(
    servers: tuple[tuple[str, Proc], ...],
    scenario: str,
    datafiles: list[Path],
    dp: str,
    cpu: int | None,
    repeat: int,
    key: str = "per_cpu",
    **kw,
) -> list[Run]:
    """Each server's best run by `key` of `repeat` runs, the servers taking turns (round r sends datafiles[r]
    when there is one per round); every run's figures stay in the best one's extra."""
    tries: dict[str, list[Run]] = {label: [] for label, _ in servers}
    for r in range(repeat):
        for label, proc in servers:
            tries[label].append(measure(proc, label, scenario, dp, cpu, datafiles[r % len(datafiles)], **kw))
    best = []
    for label, _ in servers:
        run = max(tries[label], key=lambda t: getattr(t, key))
        run.extra["all_per_cpu"] = [round(t.per_cpu) for t in tries[label]]
        run.extra["all_qps"] = [round(t.qps) for t in tries[label]]
        run.extra["lost_all_runs"] = sum(t.lost for t in tries[label])
        best.append(run)
    return best


def logged_blocks(wd: Path, tools: dict, zones: Path, export: Path, nsd: int, blocked: Path, args) -> list[Run]:
    """The blocked scenario with both servers logging every block: the guard's JSON event log to a file
    (--events FILE, as the shipped unit runs), Unbound's rpz-log to its logfile. Event lines are counted after."""
    events = wd / "guard-logged-events.jsonl"
    guard, _ = start_guard(
        wd,
        "logged",
        zones,
        nsd,
        args.server_cpu,
        "ready.bench.example.",
        dns.rcode.NOERROR,
        60,
        ("--events", str(events)),
    )
    unbound, _ = start_unbound(
        wd,
        "logged",
        tools["unbound"],
        nsd,
        args.server_cpu,
        "ready.bench.example.",
        dns.rcode.NOERROR,
        60,
        rpz_name="rpz.resolverguard.",
        rpz_file=export,
        rpz_log=True,
    )
    servers = (("resolverguard", guard), ("unbound", unbound))
    try:
        for _, proc in servers:
            dnsperf(tools["dnsperf"], args.client_cpu, proc.port, blocked, once=True, verbose=False)  # warm
        runs = best_of(
            servers, "blocked-logged", [blocked], tools["dnsperf"], args.client_cpu, args.repeat, seconds=args.duration
        )
    finally:
        for _, proc in servers:
            proc.stop()
            RUNNING.remove(proc)
    lines = sum(1 for _ in open(events, "rb")) if events.exists() else 0
    ulines = sum(1 for ln in open(wd / "unbound-logged" / "unbound.log", "rb") if b"rpz" in ln)
    log(f"event lines written: resolverguard {lines:,}, unbound rpz-log {ulines:,}")
    for r in runs:
        r.extra["event_lines"] = lines if r.server == "resolverguard" else ulines
    return runs


# ---------------------------------------------------------------- rule loading


def rules_zone(path: Path, n: int) -> str:
    """An RPZ with n QNAME rules (NXDOMAIN); returns the name of the last rule, queried to detect readiness."""
    with open(path, "w") as fh:
        fh.write(
            "$ORIGIN rules.rpz.invalid.\n$TTL 300\n"
            "@ SOA ns.rpz.invalid. hostmaster.rpz.invalid. 1 3600 600 86400 60\n  NS ns.rpz.invalid.\n"
        )
        for i in range(n):
            fh.write(f"blocked{i}.example CNAME .\n")
    return f"blocked{n - 1}.example."


def load_test(wd: Path, tools: dict[str, str], n: int, upstream: int, cpu: int) -> list[dict]:
    zones = wd / f"rules-{n}"
    zones.mkdir()
    shutil.copy(REPO / "zones" / "default.protect", zones / "default.protect")
    last = rules_zone(zones / "50-rules.rpz", n)
    results = []
    for label in ("resolverguard", "unbound"):
        log(f"loading {n:,} rules in {label}")
        if label == "resolverguard":
            proc, secs = start_guard(wd, f"rules{n}", zones, upstream, cpu, last, dns.rcode.NXDOMAIN)
        else:
            proc, secs = start_unbound(
                wd,
                f"rules{n}",
                tools["unbound"],
                upstream,
                cpu,
                last,
                dns.rcode.NXDOMAIN,
                rpz_name="rules.rpz.invalid.",
                rpz_file=zones / "50-rules.rpz",
            )
        rss, hwm = proc.rss()
        cpu_s = proc.cpu()
        proc.stop()
        RUNNING.remove(proc)
        results.append(
            {
                "server": label,
                "rules": n,
                "ready_s": secs,
                "cpu_s": cpu_s,
                "rss_mib": rss / 1024,
                "peak_rss_mib": hwm / 1024,
            }
        )
        log(f"{label}: {n:,} rules ready in {secs:.2f}s, RSS {rss / 1024:.0f} MiB (peak {hwm / 1024:.0f} MiB)")
    return results


# ---------------------------------------------------------------- cache memory and workers


def guard_cache_entries(metrics_port: int) -> int:
    """resolverguard_cache_entries from the guard's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(int(float(ln.split()[-1])) for ln in text.splitlines() if ln.startswith("resolverguard_cache_entries"))


def unbound_cache_entries(control: str, conf: Path) -> int:
    """msg.cache.count from `unbound-control stats_noreset`: cached answers (the RRsets are counted apart)."""
    out = subprocess.run([control, "-c", str(conf), "stats_noreset"], capture_output=True, text=True, check=True)
    return next(int(ln.split("=")[1]) for ln in out.stdout.splitlines() if ln.startswith("msg.cache.count="))


def cache_memory(wd: Path, tools: dict[str, str], zones: Path, upstream: int, n: int, args) -> list[dict]:
    """Each server's VmRSS with an empty cache and after n unique names were asked once (dnsperf at max
    rate, servers pinned as in the throughput runs); bytes per entry = RSS growth / entries counted by the
    server itself (/metrics, unbound-control)."""
    names = write_names(wd / "fill.txt", [f"c{i}.bench.example." for i in range(n)])
    conf = wd / "cache.toml"
    conf.write_text(f"[cache]\nentries = {n + 1000}\nbytes = {8 << 30}\n")  # no eviction at n
    results = []
    for label in ("resolverguard", "unbound"):
        if label == "resolverguard":
            mport = free_port()
            extra = ("--config", str(conf), "--metrics", f"127.0.0.1:{mport}")
            proc, _ = start_guard(
                wd, "cache", zones, upstream, args.server_cpu, "ready.bench.example.", dns.rcode.NOERROR, 60, extra
            )
            count = functools.partial(guard_cache_entries, mport)
        else:
            server = "    msg-cache-size: 2g\n    rrset-cache-size: 4g\n    extended-statistics: yes\n"
            proc, _ = start_unbound(
                wd,
                "cache",
                tools["unbound"],
                upstream,
                args.server_cpu,
                "ready.bench.example.",
                dns.rcode.NOERROR,
                60,
                server=server,
                control=free_port(),
            )
            conf_file = wd / "unbound-cache" / "unbound.conf"
            count = functools.partial(unbound_cache_entries, tools["unbound-control"], conf_file)
        empty, before = proc.rss()[0], count()
        log(f"{label}: filling the cache with {n:,} names")
        t0 = time.monotonic()
        stats, _ = dnsperf(tools["dnsperf"], args.client_cpu, proc.port, names, once=True, verbose=False)
        fill = time.monotonic() - t0
        entries = count()
        full, peak = proc.rss()
        proc.stop()
        RUNNING.remove(proc)
        added = entries - before
        per = (full - empty) * 1024 / added if added > 0 else 0.0
        results.append(
            {
                "server": label,
                "names": n,
                "entries": entries,
                "lost": stats.get("lost", 0),
                "fill_s": fill,
                "fill_qps": stats.get("qps", 0.0),
                "rss_empty_mib": empty / 1024,
                "rss_full_mib": full / 1024,
                "peak_rss_mib": peak / 1024,
                "bytes_per_entry": per,
            }
        )
        log(
            f"{label}: {entries:,} cached answers after {fill:.0f}s, RSS {empty / 1024:.0f} -> {full / 1024:.0f} MiB, "
            f"{per:.0f} bytes per entry"
        )
    return results


def udp_sockets(port: int) -> int:
    """How many UDP sockets are bound to 127.0.0.1:port (one per worker or thread with SO_REUSEPORT)."""
    with open("/proc/net/udp") as fh:
        return sum(1 for ln in fh if ln.split()[1] == f"0100007F:{port:04X}")


def scaling(wd: Path, tools: dict[str, str], zones: Path, export: Path, upstream: int, hit: Path, args) -> list[Run]:
    """Cache-hit QPS with N guard workers (--workers N) and N Unbound threads (num-threads), for each N of
    --workers; nothing pinned: on 2 CPUs the servers and dnsperf (a third process) share both. dnsperf uses
    16 client sockets, so SO_REUSEPORT spreads them over the workers' sockets."""
    runs: list[Run] = []
    for n in args.workers:
        guard, _ = start_guard(
            wd,
            f"workers{n}",
            zones,
            upstream,
            None,
            "ready.bench.example.",
            dns.rcode.NOERROR,
            60,
            ("--workers", str(n)),
        )
        unbound, _ = start_unbound(
            wd,
            f"threads{n}",
            tools["unbound"],
            upstream,
            None,
            "ready.bench.example.",
            dns.rcode.NOERROR,
            60,
            rpz_name="rpz.resolverguard.",
            rpz_file=export,
            threads=n,
        )
        servers = (("resolverguard", guard), ("unbound", unbound))
        for label, proc in servers:
            t0 = time.monotonic()
            while udp_sockets(proc.port) < n:  # every worker listens (the first one answered the probe)
                if time.monotonic() - t0 > 60:
                    raise RuntimeError(f"{label}: {udp_sockets(proc.port)} of {n} UDP sockets after 60 s")
                time.sleep(0.05)
            dnsperf(tools["dnsperf"], None, proc.port, hit, once=True, verbose=False, clients=16)  # warm each worker
            dnsperf(tools["dnsperf"], None, proc.port, hit, once=True, verbose=False, clients=16)
        for run in best_of(
            servers,
            f"cache-hit/{n}",
            [hit],
            tools["dnsperf"],
            None,
            args.repeat,
            "qps",
            seconds=args.duration,
            clients=16,
        ):
            run.extra["workers"] = n
            runs.append(run)
        for _, proc in servers:
            proc.stop()
            RUNNING.remove(proc)
    return runs


# ---------------------------------------------------------------- report


def machine(tools: dict[str, str]) -> dict:
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    mem = next((ln.split()[1] for ln in open("/proc/meminfo") if ln.startswith("MemTotal")), "0")

    def version(cmd: list[str]) -> str:
        p = subprocess.run(cmd, capture_output=True, text=True)
        text = (p.stdout + p.stderr).splitlines()
        return next((t.strip() for t in text if "ersion" in t), "?")

    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout.strip()
    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio"
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "mem_gib": round(int(mem) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", "?"),
        "python": platform.python_version(),
        "loop": loop,
        "resolverguard": (rev.stdout.strip() or "?") + ("+changes" if dirty else ""),
        "unbound": version([tools["unbound"], "-V"]),
        "nsd": version([tools["nsd"], "-v"]),
        "dnsperf": version([tools["dnsperf"], "-h"]),
    }


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "n/a"


def report(
    info: dict, args: argparse.Namespace, runs: list[Run], loads: list[dict], memory: list[dict], cmdline: str
) -> str:
    by = {(r.server, r.scenario): r for r in runs}
    lines = [
        f"Run: `{cmdline}` on {time.strftime('%Y-%m-%d %H:%M %Z')}",
        "",
        f"Machine: {info['cpus']} × {info['cpu']}, {info['mem_gib']} GiB, {info['os']}, Linux {info['kernel']}; "
        f"Python {info['python']} ({info['loop']}); resolverguard {info['resolverguard']}; "
        f"{info['unbound']}; {info['nsd']}; {info['dnsperf']}.",
        f"Servers pinned to CPU {args.server_cpu}, dnsperf and NSD to CPU {args.client_cpu}. "
        f"dnsperf: `-c 4 -q 100 -t 2 -v`; throughput: {args.duration:g} s per run, best of {args.repeat} "
        f"alternating runs per server (by queries per CPU-second).",
        "",
        "### Throughput (max rate)",
        "",
        "| scenario | server | QPS | server CPU s | queries / CPU-s | (every run) | lost (all runs) | p50 ms | p99 ms | p99.9 ms | rcodes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    scenarios = [s for s in ("cache-hit", "blocked", "blocked-logged", "mixed", "cache-miss") if ("unbound", s) in by]
    for s in scenarios:
        for srv in ("resolverguard", "unbound", "python-echo"):
            if (srv, s) not in by:
                continue
            r = by[(srv, s)]
            every = " / ".join(f"{x:,}" for x in r.extra.get("all_per_cpu", []))
            lines.append(
                f"| {s} | {srv} | {r.qps:,.0f} | {r.cpu:.2f} | {r.per_cpu:,.0f} | {every} | {r.extra.get('lost_all_runs', r.lost)} | "
                f"{r.p50_ms:.3f} | {r.p99_ms:.3f} | {r.p999_ms:.3f} | {r.rcodes} |"
            )
    lines += [
        "",
        "### resolverguard / Unbound, and as a share of the Python ceiling (bench/echo.py)",
        "",
        "| scenario | QPS | queries / CPU-s | p50 | p99 | lost (rg / unbound) | queries / CPU-s: rg / echo | unbound / echo |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for s in scenarios:
        g, u = by[("resolverguard", s)], by[("unbound", s)]
        e = by.get(("python-echo", s))
        lost = f"{g.extra.get('lost_all_runs', g.lost)} / {u.extra.get('lost_all_runs', u.lost)}"
        shares = f"{ratio(g.per_cpu, e.per_cpu)} | {ratio(u.per_cpu, e.per_cpu)}" if e else "n/a | n/a"
        lines.append(
            f"| {s} | {ratio(g.qps, u.qps)} | {ratio(g.per_cpu, u.per_cpu)} | {ratio(g.p50_ms, u.p50_ms)} | "
            f"{ratio(g.p99_ms, u.p99_ms)} | {lost} | {shares} |"
        )
    fixed = [s for s in ("mixed@1k", "cache-miss@1k") if ("unbound", s) in by]
    if fixed:
        lines += [
            "",
            "### Fixed rate: 1,000 q/s (`dnsperf -Q 1000`)",
            "",
            "| traffic | server | QPS | server CPU s | lost | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | p99 ratio |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in fixed:
            g, u = by[("resolverguard", s)], by[("unbound", s)]
            for r in (g, u):
                rat = ratio(g.p99_ms, u.p99_ms) if r is g else ""
                lines.append(
                    f"| {s} | {r.server} | {r.qps:,.0f} | {r.cpu:.2f} | {r.lost} | {r.p50_ms:.3f} | "
                    f"{r.p90_ms:.3f} | {r.p99_ms:.3f} | {r.p999_ms:.3f} | {r.max_ms:.3f} | {rat} |"
                )
    scaled = [r for r in runs if "workers" in r.extra]
    if scaled:
        lines += [
            "",
            "### Cache-hit QPS with more workers: `serve --workers N` / Unbound `num-threads: N`",
            "",
            f"Nothing pinned: the server's processes or threads and dnsperf (`-c 16`, a third process) share the "
            f"machine's {info['cpus']} CPUs, so N = 2 cannot double QPS here. Best of {args.repeat} by QPS; server "
            "CPU is the sum over the process and its workers.",
            "",
            "| server | N | QPS | (every run) | server CPU s | queries / CPU-s | lost | p99 ms | QPS vs N = 1 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for srv in ("resolverguard", "unbound"):
            one = next((r for r in scaled if r.server == srv and r.extra["workers"] == 1), None)
            for r in (x for x in scaled if x.server == srv):
                every = " / ".join(f"{x:,}" for x in r.extra["all_qps"])
                lines.append(
                    f"| {srv} | {r.extra['workers']} | {r.qps:,.0f} | {every} | {r.cpu:.2f} | {r.per_cpu:,.0f} | "
                    f"{r.extra['lost_all_runs']} | {r.p99_ms:.3f} | {ratio(r.qps, one.qps) if one else 'n/a'} |"
                )
    if memory:
        g = next(x for x in memory if x["server"] == "resolverguard")
        u = next(x for x in memory if x["server"] == "unbound")
        lines += [
            "",
            f"### Memory with {g['names']:,} cached answers",
            "",
            "Each server asked every name once (`dnsperf -n 1`, max rate, pinned as above); entries as the server "
            "counts them (`resolverguard_cache_entries` on /metrics, Unbound's `msg.cache.count`); "
            "bytes per entry = (VmRSS full − VmRSS empty) / entries added.",
            "",
            "| server | entries | lost | fill s | fill QPS | RSS empty (MiB) | RSS full (MiB) | peak (MiB) | bytes / entry | ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for x in (g, u):
            rat = ratio(g["bytes_per_entry"], u["bytes_per_entry"]) if x is g else ""
            lines.append(
                f"| {x['server']} | {x['entries']:,} | {x['lost']} | {x['fill_s']:.0f} | {x['fill_qps']:,.0f} | "
                f"{x['rss_empty_mib']:.0f} | {x['rss_full_mib']:.0f} | {x['peak_rss_mib']:.0f} | "
                f"{x['bytes_per_entry']:.0f} | {rat} |"
            )
    if loads:
        lines += [
            "",
            "### Loading RPZ rules (QNAME rules, `name CNAME .`)",
            "",
            "| rules | server | ready (s) | CPU (s) | RSS (MiB) | peak RSS (MiB) | time ratio | RSS ratio |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for n in sorted({x["rules"] for x in loads}):
            g = next(x for x in loads if x["rules"] == n and x["server"] == "resolverguard")
            u = next(x for x in loads if x["rules"] == n and x["server"] == "unbound")
            for x in (g, u):
                extra = (
                    f"{ratio(g['ready_s'], u['ready_s'])} | {ratio(g['rss_mib'], u['rss_mib'])}" if x is g else " | "
                )
                lines.append(
                    f"| {n:,} | {x['server']} | {x['ready_s']:.2f} | {x['cpu_s']:.2f} | {x['rss_mib']:.0f} | "
                    f"{x['peak_rss_mib']:.0f} | {extra} |"
                )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per max-rate run (default 6)")
    ap.add_argument("--repeat", type=int, default=2, help="max-rate runs per server and scenario; the best counts")
    ap.add_argument("--rate-duration", type=float, default=10.0, help="seconds per 1,000 q/s run (default 10)")
    ap.add_argument("--rules", default="100000,1000000", help="rule counts for the load test ('' to skip)")
    ap.add_argument("--miss-names", type=int, default=300_000, help="unique names per cache-miss run")
    ap.add_argument(
        "--workers",
        default="1,2",
        type=lambda v: [int(x) for x in v.split(",") if x.strip()],
        help="guard workers / Unbound threads for the unpinned cache-hit scaling runs ('' to skip)",
    )
    ap.add_argument(
        "--cache-fill",
        type=int,
        default=1_000_000,
        help="unique names cached for the RSS-per-entry test (0 to skip; about 3 min at 1M today)",
    )
    ap.add_argument(
        "--logged",
        type=int,
        default=1,
        help="1: the blocked run again with every block logged (guard --events FILE, Unbound rpz-log + logfile)",
    )
    ap.add_argument("--out", default=str(REPO / "bench" / "results.md"), help="markdown report (JSON beside it)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops every server we started
    ncpu = os.cpu_count() or 1
    args.client_cpu, args.server_cpu = 0, max(0, ncpu - 1)
    if ncpu < 2:
        log("WARNING: one CPU: server and load generator share it")
    tools = ensure_tools()
    wd = Path(tempfile.mkdtemp(prefix="rgbench-"))
    log(f"work directory {wd}")
    runs: list[Run] = []
    loads: list[dict] = []
    memory: list[dict] = []
    try:
        nsd = start_nsd(wd, tools["nsd"], args.client_cpu)
        zones = wd / "zones"
        shutil.copytree(REPO / "zones", zones)
        export = wd / "export.rpz"
        subprocess.run(
            [sys.executable, "-m", "resolverguard", "export-rpz", "--zones", str(zones), "-o", str(export)], check=True
        )
        overrides = {
            ln.split()[0]
            for ln in (zones / "10-overrides.rpz").read_text().splitlines()
            if ln.strip() and not ln.startswith((";", "$", " ", "@"))
        }
        typos = typo_names(export, overrides)
        rng = random.Random(6)
        hits = [f"h{i}.bench.example." for i in range(HIT_NAMES)]
        typo_sample = rng.sample(typos, min(1000, len(typos)))
        log(f"{len(typos)} typo neighbours in the export; {len(typo_sample)} used as blocked names")
        files = {
            "hit": write_names(wd / "hit.txt", hits),
            "blocked": write_names(wd / "blocked.txt", typo_sample),
        }
        mixed = [rng.choice(typo_sample) if i % 10 == 0 else rng.choice(hits) for i in range(100_000)]
        files["mixed"] = write_names(wd / "mixed.txt", mixed)
        for r in range(args.repeat):
            files[f"miss{r}"] = write_names(
                wd / f"miss{r}.txt", [f"m{r}x{i}.bench.example." for i in range(args.miss_names)]
            )
        files["miss1k"] = write_names(
            wd / "miss1k.txt", [f"r{i}.bench.example." for i in range(int(args.rate_duration * 1000) + 2000)]
        )

        guard, _ = start_guard(
            wd, "main", zones, nsd.port, args.server_cpu, "ready.bench.example.", dns.rcode.NOERROR, timeout=60
        )
        unbound, _ = start_unbound(
            wd,
            "main",
            tools["unbound"],
            nsd.port,
            args.server_cpu,
            "ready.bench.example.",
            dns.rcode.NOERROR,
            timeout=60,
            rpz_name="rpz.resolverguard.",
            rpz_file=export,
        )
        echo = start_echo(wd, args.server_cpu)
        servers = (("resolverguard", guard), ("unbound", unbound), ("python-echo", echo))
        probe = typo_sample[0]
        for label, proc in servers:
            rc = ask(proc.port, probe)
            log(f"{label}: {probe} -> {dns.rcode.to_text(rc) if rc is not None else 'no answer'}")
            dnsperf(tools["dnsperf"], args.client_cpu, proc.port, files["hit"], once=True, verbose=False)  # warm
            dnsperf(tools["dnsperf"], args.client_cpu, proc.port, files["blocked"], once=True, verbose=False)
        plan = [
            ("cache-hit", "hit", {"seconds": args.duration}),
            ("blocked", "blocked", {"seconds": args.duration}),
            ("mixed", "mixed", {"seconds": args.duration}),
            ("cache-miss", "miss", {"seconds": args.duration, "once": True}),
        ]
        for scenario, f, kw in plan:
            datafiles = [files[f"miss{r}"] for r in range(args.repeat)] if f == "miss" else [files[f]]
            runs += best_of(servers, scenario, datafiles, tools["dnsperf"], args.client_cpu, args.repeat, **kw)
        for scenario, f in (("mixed@1k", "mixed"), ("cache-miss@1k", "miss1k")):
            runs += best_of(
                servers[:2],
                scenario,
                [files[f]],
                tools["dnsperf"],
                args.client_cpu,
                1,
                seconds=args.rate_duration,
                rate=1000,
            )
        for _, proc in servers:
            proc.stop()
            RUNNING.remove(proc)
        if args.logged:
            runs += logged_blocks(wd, tools, zones, export, nsd.port, files["blocked"], args)
        runs += scaling(wd, tools, zones, export, nsd.port, files["hit"], args)
        if args.cache_fill:
            memory = cache_memory(wd, tools, zones, nsd.port, args.cache_fill, args)
        for n in [int(x) for x in args.rules.split(",") if x.strip()]:
            loads += load_test(wd, tools, n, nsd.port, args.server_cpu)
    finally:
        for proc in reversed(RUNNING):
            proc.stop()
        if not args.keep:
            shutil.rmtree(wd, ignore_errors=True)
    info = machine(tools)
    cmdline = "bench/run.sh " + " ".join(sys.argv[1:])
    text = report(info, args, runs, loads, memory, cmdline.strip())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(
        json.dumps(
            {"machine": info, "runs": [asdict(r) for r in runs], "loads": loads, "cache_memory": memory}, indent=1
        )
    )
    print(text)
    log(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
