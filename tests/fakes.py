"""Test doubles with real sockets: a scriptable stub upstream and a resolverguard process on loopback."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset

ROOT = Path(__file__).resolve().parent.parent
GUARD_CMD = [sys.executable, *(os.environ.get("RG_GUARD_CMD") or "-m resolverguard").split()]


@dataclass
class Rule:
    answers: list[str] = field(default_factory=list)
    rcode: int = dns.rcode.NOERROR
    delay: float = 0.0
    mode: str = "normal"  # normal|drop|truncate|wrong_id|wrong_question|garbage|other_port|big
    soa_ttl: int = 60


class FakeUpstream:
    """A scriptable authoritative-ish server on UDP and TCP at the same loopback port.

    Unknown names get NXDOMAIN with an SOA (minimum 60), so negative caching can be observed.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        for _ in range(50):
            self.udp = socket.socket(fam, socket.SOCK_DGRAM)
            self.udp.bind((host, 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(fam, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind((host, self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        self.tcp.listen(64)
        self.other = socket.socket(fam, socket.SOCK_DGRAM)
        self.other.bind((host, 0))
        self.rules: dict[tuple[str, str], Rule] = {}
        self.seen: list[tuple[str, str, str, int]] = []  # transport, qname text as sent, qtype, id
        self.stopped = False
        self.threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]
        for t in self.threads:
            t.start()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def on(self, name: str, qtype: str = "A", *answers: str, **kw) -> FakeUpstream:
        """Script the reply for (name, qtype): answers as zone-file lines, rcode, delay, mode."""
        self.rules[(name.lower().rstrip("."), qtype.upper())] = Rule(list(answers), **kw)
        return self

    def count(self, name: str, transport: str | None = None) -> int:
        name = name.lower().rstrip(".")
        return sum(1 for t, n, _, _ in self.seen if n.lower().rstrip(".") == name and transport in (None, t))

    def close(self) -> None:
        self.stopped = True
        for s in (self.udp, self.tcp, self.other):
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in recvfrom/accept
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _reply(self, data: bytes, transport: str) -> tuple[Rule, bytes | None]:
        try:
            q = dns.message.from_wire(data)
        except Exception:
            return Rule(), None
        qname = q.question[0].name.to_text().rstrip(".")
        qtype = dns.rdatatype.to_text(q.question[0].rdtype)
        self.seen.append((transport, qname, qtype, q.id))
        rule = self.rules.get((qname.lower(), qtype)) or self.rules.get((qname.lower(), "*"))
        if rule is None:
            rule = Rule(rcode=dns.rcode.NXDOMAIN)
        r = dns.message.make_response(q)
        r.flags |= dns.flags.RA
        r.set_rcode(rule.rcode)
        for line in rule.answers:
            r.answer.append(dns.rrset.from_text(*_split_rr(line)))
        if rule.mode == "big":
            for i in range(40):
                r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "TXT", f'"{"x" * 60} {i}"'))
        if rule.rcode == dns.rcode.NXDOMAIN or (rule.rcode == 0 and not r.answer):
            name = q.question[0].name
            zone = name.parent() if len(name) > 2 else dns.name.root
            r.authority.append(
                dns.rrset.from_text(
                    zone, rule.soa_ttl, "IN", "SOA", f"ns.{zone} host.{zone} 1 3600 600 86400 {rule.soa_ttl}"
                )
            )
        wire = r.to_wire(max_size=65535)
        if rule.mode == "truncate" and transport == "udp":
            r2 = dns.message.make_response(q)
            r2.flags |= dns.flags.TC
            wire = r2.to_wire()
        elif rule.mode == "wrong_id":
            wire = ((q.id + 1) % 65536).to_bytes(2, "big") + wire[2:]
        elif rule.mode == "wrong_question":
            r3 = dns.message.make_response(dns.message.make_query("evil.example.", "A"))
            r3.id = q.id
            r3.answer.append(dns.rrset.from_text("evil.example.", 300, "IN", "A", "203.0.113.66"))
            wire = r3.to_wire()
        elif rule.mode == "garbage":
            wire = data[:2] + b"\x81\x80\xff\xff" + os.urandom(20)
        elif rule.mode == "drop":
            wire = None
        return rule, wire

    def _serve_udp(self) -> None:
        while not self.stopped:
            try:
                data, addr = self.udp.recvfrom(65535)
            except OSError:
                return
            rule, wire = self._reply(data, "udp")
            if wire is None:
                continue
            sock = self.other if rule.mode == "other_port" else self.udp

            def send(sock=sock, wire=wire, addr=addr) -> None:
                try:
                    sock.sendto(wire, addr)
                except OSError:
                    pass

            threading.Timer(rule.delay, send).start() if rule.delay else send()

    def _serve_tcp(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True).start()

    def _tcp_conn(self, conn: socket.socket) -> None:
        with conn:
            try:
                while True:
                    head = recv_exact(conn, 2)
                    if not head:
                        return
                    data = recv_exact(conn, int.from_bytes(head, "big"))
                    if data is None:
                        return
                    rule, wire = self._reply(data, "tcp")
                    if rule.delay:
                        time.sleep(rule.delay)
                    if wire is not None:
                        conn.sendall(len(wire).to_bytes(2, "big") + wire)
            except OSError:
                return


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on host (small race: it is released before use)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(family, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no free port on {host}")


def recv_exact(conn: socket.socket, n: int) -> bytes | None:
    """Exactly n bytes from a stream socket; None when the peer closes first."""
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _split_rr(line: str):
    name, ttl, rdtype, *rdata = line.split(None, 3)
    return name, int(ttl), "IN", rdtype, " ".join(rdata)


class Guard:
    """A resolverguard process on loopback; stopped by PID with SIGTERM."""

    def __init__(self, args: list[str], cwd: Path, env: dict | None = None) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [*GUARD_CMD, "serve", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.ports: list[tuple[str, int]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            self.ports = [
                (m[1], int(m[2]))
                for line in list(self.lines)
                if (m := re.search(r"listening address=(\S+) port=(\d+)", line))
            ]
            if any("started version" in line for line in self.lines):
                break
            if self.proc.poll() is not None:
                raise RuntimeError("resolverguard exited:\n" + "".join(self.lines))
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError("resolverguard did not start:\n" + "".join(self.lines))
        self.host, self.port = self.ports[0]

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def query(
        self,
        name: str,
        qtype: str = "A",
        *,
        tcp: bool = False,
        timeout: float = 4.0,
        host: str | None = None,
        **make_kw,
    ) -> dns.message.Message:
        q = dns.message.make_query(name, qtype, **make_kw)
        fn = dns.query.tcp if tcp else dns.query.udp
        return fn(q, host or self.host, port=self.port, timeout=timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        code = stop_process(self.proc, sig, timeout)
        self.reader.join(2)
        return code


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
    """Stop a process we started, by its PID: sig, then SIGKILL after timeout; its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
