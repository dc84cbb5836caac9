#!/usr/bin/env python3
"""Soak and long fuzz for resolverguard (issue 7); figures go to docs/reliability.md.

  python3 bench/soak.py soak [--seconds 70] [--rate 1500]   dnsperf at a fixed rate through the guard, a policy
      reload every second (an RPZ zone rewritten + SIGHUP), one of two NSD upstreams killed at 40% and restarted
      at 60%, a sampling client checking every answer against the policy generation in force; RSS every second.
  python3 bench/soak.py fuzz [--inputs 1000000]             hostile UDP datagrams (and TCP frames, 1 in 20) at a
      guard; every readable query must be answered exactly once, normal queries keep working, no exception.

Everything listens on 127.0.0.1; every process started here is stopped by its PID (NSD by its process group).
Exit status 0 only when every check held. Needs dnsperf and nsd (apt install dnsperf nsd).
"""

from __future__ import annotations

import argparse
import json
import os
import random
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
from pathlib import Path

import dns.message
import dns.rcode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from hostile import REPLIED, UpstreamProcess, expected_kind, fuzz_message, rss_kib, scrape  # noqa: E402


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                t.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


class Nsd:
    """A real authoritative server for soak.test (wildcard A 192.0.2.1, TTL 2) on 127.0.0.1:port."""

    ZONE = (
        "$ORIGIN soak.test.\n$TTL 2\n@ SOA ns.soak.test. host.soak.test. 1 3600 600 86400 2\n  NS ns.soak.test.\n"
        "ns A 127.0.0.1\n* A 192.0.2.1\n"
    )

    def __init__(self, workdir: Path, port: int) -> None:
        self.dir, self.port = workdir, port
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "soak.test.zone").write_text(self.ZONE)
        (workdir / "nsd.conf").write_text(
            f'server:\n  ip-address: 127.0.0.1@{port}\n  username: ""\n  chroot: ""\n  zonesdir: "{workdir}"\n'
            f'  database: ""\n  pidfile: "{workdir}/nsd.pid"\n  xfrdfile: "{workdir}/xfrd.state"\n'
            f'  zonelistfile: "{workdir}/zone.list"\n  logfile: "{workdir}/nsd.log"\n  server-count: 1\n'
            f"  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\n"  # no response rate limiting towards the guard'
            f"  verbosity: 0\nremote-control:\n  control-enable: no\nzone:\n  name: soak.test\n"
            f"  zonefile: soak.test.zone\n"
        )
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        nsd = shutil.which("nsd") or "/usr/sbin/nsd"
        self.proc = subprocess.Popen([nsd, "-d", "-c", str(self.dir / "nsd.conf")], start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                raw = udp_ask(dns.message.make_query("probe.soak.test", "A"), ("127.0.0.1", self.port), 0.3)
                if raw is not None:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"nsd on port {self.port} did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group this script created: nsd forks its workers
            self.proc.wait(10)
        self.proc = None


def udp_ask(q: dns.message.Message, addr: tuple[str, int], timeout: float) -> dns.message.Message | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q.to_wire(), addr)
        try:
            while True:
                reply = dns.message.from_wire(s.recv(65535))
                if reply.id == q.id:
                    return reply
        except TimeoutError:
            return None


class Guard:
    def __init__(self, workdir: Path, config: str, upstreams: list[str], zones: Path, *extra: str) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        cfg = workdir / "guard.toml"
        cfg.write_text(config)
        argv = [
            sys.executable,
            "-m",
            "resolverguard",
            "serve",
            "--config",
            str(cfg),
            "--zones",
            str(zones),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--metrics",
            f"127.0.0.1:{self.metrics_port}",
            "--events",
            "",
            "--log-level",
            "WARNING",
            *extra,
        ]
        for u in upstreams:
            argv += ["--upstream", u]
        self.log = open(workdir / "guard.log", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir)
        self.url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                scrape(self.url)
                if udp_ask(dns.message.make_query("probe.invalid", "A"), self.addr, 0.5) is not None:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("guard did not start:\n" + self.output())

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# --- soak ---------------------------------------------------------------------------------------------------------

TOGGLE_BLOCKED = "CNAME ."  # NXDOMAIN


def gen_address(n: int) -> str:
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def write_policy(zones: Path, n: int) -> None:
    """Generation n: gen.soak.test answers 10.x.y.z encoding n; toggle.soak.test is blocked when n is even,
    local data 192.0.2.200 when n is odd. Written to a temporary name and renamed: a reload sees all or nothing."""
    toggle = TOGGLE_BLOCKED if n % 2 == 0 else "A 192.0.2.200"
    text = (
        f"$ORIGIN soak.rpz.invalid.\n$TTL 60\n@ SOA ns.rpz.invalid. h.rpz.invalid. {n} 3600 600 86400 60\n"
        f"  NS ns.rpz.invalid.\ngen.soak.test A {gen_address(n)}\ntoggle.soak.test {toggle}\n"
    )
    tmp = zones / "50-soak.rpz.tmp"
    tmp.write_text(text)
    os.replace(tmp, zones / "50-soak.rpz")


class Sampler(threading.Thread):
    """Asks gen, toggle, gen in turn: both gen answers bracket the generations in force while toggle was
    answered, so toggle's answer must belong to one of them. Also checks that generations never go back."""

    def __init__(self, addr: tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.addr, self.stop = addr, threading.Event()
        self.samples = self.violations = self.unanswered = self.forwarded_ok = 0
        self.examples: list[str] = []
        self.last_gen = -1

    def gen(self) -> int | None:
        r = udp_ask(dns.message.make_query("gen.soak.test", "A"), self.addr, 5)
        if r is None or r.rcode() != 0 or not r.answer:
            self.bad(f"gen.soak.test not answered by policy: {r and dns.rcode.to_text(r.rcode())}")
            return None
        a, b, c = (int(x) for x in r.answer[0][0].to_text().split(".")[1:])
        return a << 16 | b << 8 | c

    def bad(self, what: str) -> None:
        self.violations += 1
        if len(self.examples) < 10:
            self.examples.append(what)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            g1 = self.gen()
            t = udp_ask(dns.message.make_query("toggle.soak.test", "A"), self.addr, 5)
            g2 = self.gen()
            i += 1
            f = udp_ask(dns.message.make_query(f"sample{i}.soak.test", "A"), self.addr, 5)  # forwarded to NSD
            if f is not None and f.rcode() == 0 and f.answer and f.answer[0][0].to_text() == "192.0.2.1":
                self.forwarded_ok += 1
            else:
                self.bad(f"forwarded sample{i}.soak.test: {f and dns.rcode.to_text(f.rcode())}")
            if t is None:
                self.unanswered += 1
                continue
            if g1 is None or g2 is None:
                continue
            self.samples += 1
            if g1 < self.last_gen or g2 < g1:
                self.bad(f"policy went back: {self.last_gen} -> {g1} -> {g2}")
            self.last_gen = g2
            state = (
                "blocked"
                if t.rcode() == dns.rcode.NXDOMAIN
                else ("open" if t.rcode() == 0 and t.answer and t.answer[0][0].to_text() == "192.0.2.200" else "other")
            )
            allowed = {"blocked" if n % 2 == 0 else "open" for n in range(g1, g2 + 1)}
            if state not in allowed:
                self.bad(f"toggle {state} while generations {g1}..{g2} were in force")


def run_soak(args: argparse.Namespace) -> int:
    for prog in ("dnsperf", "nsd"):
        if not (shutil.which(prog) or shutil.which(prog, path="/usr/sbin")):
            sys.exit(f"soak: {prog} not installed")
    work = Path(tempfile.mkdtemp(prefix="rg-soak-"))
    zones = work / "zones"
    zones.mkdir()
    write_policy(zones, 0)
    nsds = [Nsd(work / "nsd1", free_port()), Nsd(work / "nsd2", free_port())]
    names = work / "queries.txt"
    rng = random.Random(7)
    with names.open("w") as fh:  # unique names (TTL 2 at NSD: mostly cache misses), typo-neighbours, repeats
        for i in range(200_000):
            r = rng.random()
            if r < 0.80:
                fh.write(f"q{i}.soak.test A\n")
            elif r < 0.90:
                fh.write(f"hot{i % 50}.soak.test A\n")
            elif r < 0.95:
                typo = rng.choice(["army.ml", "www.army.ml", "amry.mil", "gmial.com"])
                fh.write(f"{typo} {rng.choice(['A', 'MX'])}\n")
            else:
                fh.write(f"q{i}.soak.test AAAA\n")
    config = "timeout = 0.5\nservfail_after = 2.5\n[cache]\nentries = 20000\n[tcp]\nmax_connections = 1000\n"
    guard = Guard(
        work, config, [f"127.0.0.1:{n.port}" for n in nsds], zones, "--protect", "army.mil", "--protect", "gmail.com"
    )
    print(f"soak: guard pid {guard.proc.pid} on 127.0.0.1:{guard.port}; NSD on {[n.port for n in nsds]}; {work}")
    rss: list[tuple[float, int]] = []
    started = time.monotonic()
    sampler = Sampler(guard.addr)
    sampler.start()
    perf = subprocess.Popen(
        [
            "dnsperf",
            "-s",
            "127.0.0.1",
            "-p",
            str(guard.port),
            "-d",
            str(names),
            "-l",
            str(args.seconds),
            "-Q",
            str(args.rate),
            "-c",
            "4",
            "-t",
            "5",
            "-S",
            "10",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    generation, killed_at, restarted_at = 0, None, None
    try:
        while perf.poll() is None:
            time.sleep(1.0)
            now = time.monotonic() - started
            generation += 1
            write_policy(zones, generation)
            guard.proc.send_signal(signal.SIGHUP)  # and the file watcher sees the rename too
            rss.append((now, rss_kib(guard.proc.pid)))
            if killed_at is None and now >= args.seconds * 0.4:
                nsds[0].kill()
                killed_at = now
                print(f"soak: t={now:.0f}s killed NSD on port {nsds[0].port}")
            elif killed_at is not None and restarted_at is None and now >= args.seconds * 0.6:
                nsds[0].start()
                restarted_at = now
                print(f"soak: t={now:.0f}s restarted NSD on port {nsds[0].port}")
        out = perf.stdout.read()
    finally:
        sampler.stop.set()
        sampler.join(20)
        m = scrape(guard.url)
        code = guard.stop()
        for n in nsds:
            n.kill()
    sent = int(re.search(r"Queries sent:\s+(\d+)", out)[1])
    completed = int(re.search(r"Queries completed:\s+(\d+)", out)[1])
    lost = int(re.search(r"Queries lost:\s+(\d+)", out)[1])
    log = guard.output()
    result = {
        "seconds": args.seconds,
        "rate_qps": args.rate,
        "queries_sent": sent,
        "queries_completed": completed,
        "queries_lost": lost,
        "rcodes": {k: int(v) for k, v in re.findall(r"(NOERROR|NXDOMAIN|SERVFAIL|REFUSED|FORMERR) (\d+)", out)},
        "qps": float(re.search(r"Queries per second:\s+([\d.]+)", out)[1]),
        "latency_avg_ms": 1000 * float(re.search(r"Average Latency \(s\):\s+([\d.]+)", out)[1]),
        "latency_max_ms": 1000 * float(re.search(r"max ([\d.]+)\)", out)[1]),
        "policy_generations_written": generation,
        "reloads_success": m.get('resolverguard_policy_reloads_total{result="success"}'),
        "reloads_failure": m.get('resolverguard_policy_reloads_total{result="failure"}'),
        "nsd_killed_at_s": killed_at,
        "nsd_restarted_at_s": restarted_at,
        "sampler_checks": sampler.samples,
        "sampler_forwarded_ok": sampler.forwarded_ok,
        "sampler_violations": sampler.violations,
        "sampler_unanswered": sampler.unanswered,
        "violation_examples": sampler.examples,
        "upstream_errors": {k: v for k, v in m.items() if k.startswith("resolverguard_upstream_errors_total") and v},
        "responses": {k: v for k, v in m.items() if k.startswith("resolverguard_responses_total{") and v},
        "internal_errors": m.get("resolverguard_internal_errors_total"),
        "cache_entries_end": m.get("resolverguard_cache_entries"),
        "rss_kib_first": rss[2][1] if len(rss) > 2 else None,
        "rss_kib_max": max(r for _, r in rss),
        "rss_kib_last": rss[-1][1],
        "rss_kib_per_10s": [r for t, r in rss[::10]],
        "traceback_in_log": "Traceback" in log,
        "guard_exit": code,
    }
    print(out)
    print(json.dumps(result, indent=1))
    ok = (
        lost == 0
        and sampler.violations == 0
        and sampler.unanswered == 0
        and not result["traceback_in_log"]
        and result["internal_errors"] == 0
        and code == 0
    )
    print("soak:", "PASS" if ok else "FAIL")
    shutil.rmtree(work, ignore_errors=True) if ok else print(f"soak: kept {work}")
    return 0 if ok else 1


# --- fuzz ---------------------------------------------------------------------------------------------------------


def run_fuzz(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="rg-fuzz-"))
    (work / "zones").mkdir()
    shutil.copy(ROOT / "zones" / "10-overrides.rpz", work / "zones")
    up = UpstreamProcess("192.0.2.1")
    guard = Guard(work, "timeout = 0.3\nservfail_after = 0.6\n", [up.address], work / "zones", "--protect", "army.mil")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    print(f"fuzz: guard pid {guard.proc.pid}; seed {seed}; {args.inputs} inputs")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(3.0)
    done = expected = got = tcp_inputs = probes_failed = 0
    kinds = {"unreadable": 0, "response": 0, "notimp": 0, "formerr": 0}  # formerr: at least (the pipeline may add)
    rss_start = rss_kib(guard.proc.pid)
    started = time.monotonic()
    while done < args.inputs:
        want = 0
        tcp_batch: list[bytes] = []
        for _ in range(min(100, args.inputs - done)):
            data = fuzz_message(rng)
            done += 1
            if rng.random() < 0.05:  # over TCP instead, pipelined on one connection per batch
                tcp_batch.append(data)
                continue
            sock.sendto(data, guard.addr)
            kind = expected_kind(data)
            want += kind in REPLIED
            if kind in kinds:
                kinds[kind] += 1
        expected += want
        for _ in range(want):
            try:
                reply = sock.recv(65535)
            except TimeoutError:
                break
            if len(reply) < 12 or not reply[2] & 0x80:
                print(f"fuzz: bad reply {reply[:16]!r}")
                return 1
            got += 1
        if tcp_batch:
            tcp_inputs += len(tcp_batch)
            fuzz_tcp(guard.addr, tcp_batch)
        if done % 20_000 < 100:
            r = udp_ask(dns.message.make_query(f"probe{done}.example", "A"), guard.addr, 3)  # a normal query
            probes_failed += r is None or not r.answer or r.answer[0][0].to_text() != "192.0.2.1"
            print(
                f"fuzz: {done} inputs, {got}/{expected} replies, rss {rss_kib(guard.proc.pid)} KiB, "
                f"{done / (time.monotonic() - started):.0f} inputs/s",
                flush=True,
            )
    elapsed = time.monotonic() - started
    m = scrape(guard.url)
    rss_end = rss_kib(guard.proc.pid)
    code = guard.stop()
    up.kill()
    log = guard.output()
    result = {
        "inputs": done,
        "udp_inputs": done - tcp_inputs,
        "tcp_inputs": tcp_inputs,
        "seed": seed,
        "seconds": round(elapsed, 1),
        "udp_expected_replies": expected,
        "udp_replies": got,
        "probes_failed": probes_failed,
        "internal_errors": m["resolverguard_internal_errors_total"],
        "malformed": {k: v for k, v in m.items() if k.startswith("resolverguard_malformed_total")},
        "client_side_kinds_udp": kinds,
        "rss_kib_start": rss_start,
        "rss_kib_end": rss_end,
        "traceback_in_log": "Traceback" in log,
        "guard_exit": code,
    }
    print(json.dumps(result, indent=1))
    ok = (
        got == expected
        and probes_failed == 0
        and result["internal_errors"] == 0
        and not result["traceback_in_log"]
        and code == 0
    )
    print("fuzz:", "PASS" if ok else "FAIL")
    shutil.rmtree(work, ignore_errors=True) if ok else print(f"fuzz: kept {work}")
    return 0 if ok else 1


def fuzz_tcp(addr: tuple[str, int], frames: list[bytes]) -> None:
    """Frames of at least a header go pipelined on one connection; each shorter one on its own (it closes)."""
    long = [f for f in frames if len(f) >= 12]
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(b"".join(struct.pack("!H", len(f)) + f for f in long))
        want = sum(1 for f in long if not f[2] & 0x80)
        buf = b""
        while want:
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack_from("!H", buf)[0]:
                buf = buf[2 + struct.unpack_from("!H", buf)[0] :]
                want -= 1
            if not want:
                break
            chunk = s.recv(65535)
            if not chunk:
                raise RuntimeError(f"guard closed a TCP connection with {want} replies owed")
            buf += chunk
    for f in frames:
        if len(f) < 12:
            with socket.create_connection(addr, timeout=5) as s:
                s.sendall(struct.pack("!H", len(f)) + f)
                s.settimeout(5)
                if s.recv(1) != b"":
                    raise RuntimeError("a short frame was answered")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("soak")
    s.add_argument("--seconds", type=int, default=70)
    s.add_argument("--rate", type=int, default=1500)
    f = sub.add_parser("fuzz")
    f.add_argument("--inputs", type=int, default=1_000_000)
    f.add_argument("--seed", type=int)
    args = p.parse_args()
    return run_soak(args) if args.cmd == "soak" else run_fuzz(args)


if __name__ == "__main__":
    sys.exit(main())
