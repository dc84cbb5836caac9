"""Helpers for the reliability tests (test_hostile.py and friends): metrics, raw sockets, fuzz input, stub upstreams."""

from __future__ import annotations

import os
import random
import resource
import socket
import struct
import threading
import time
import urllib.request

import dns.message
from fakes import free_port, recv_exact
from prometheus_client.parser import text_string_to_metric_families

from resolverguard import wire
from resolverguard.errors import MalformedQuery


def scrape(url: str) -> dict[str, float]:
    """/metrics as {'name{a="b",...}': value} (labels sorted), for easy lookups."""
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (127.0.0.1 only)
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def start_with_metrics(start_guard, *args: str, **kw):
    """A guard with /metrics on a free port: (guard, url)."""
    port = free_port()
    guard = start_guard("--metrics", f"127.0.0.1:{port}", *args, **kw)
    return guard, f"http://127.0.0.1:{port}/metrics"


def wait_metric(url: str, name: str, done, timeout: float = 10.0) -> float:
    """Poll until done(value) (metrics are recorded just after a reply goes out); return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = scrape(url).get(name, 0.0)
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def config(tmp_path, text: str) -> str:
    path = tmp_path / "guard.toml"
    path.write_text(text)
    return str(path)


def udp_exchange(data: bytes, addr: tuple[str, int], timeout: float = 3.0, source: str = "127.0.0.1") -> bytes | None:
    """Send one datagram and return the first reply, or None when nothing comes back within timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(timeout)
        s.sendto(data, addr)
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def query_from(
    source: str, addr: tuple[str, int], name: str, qtype: str = "A", timeout: float = 3.0, **kw
) -> dns.message.Message | None:
    """A dnspython query sent from a chosen loopback address (127.0.0.0/8 is all ours); None on timeout."""
    raw = udp_exchange(dns.message.make_query(name, qtype, **kw).to_wire(), addr, timeout, source)
    return None if raw is None else dns.message.from_wire(raw)


def raise_nofile(wanted: int) -> None:
    """Raise RLIMIT_NOFILE (soft, up to the hard limit) for this process and the guards it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def fuzz_message(rng: random.Random) -> bytes:
    """One hostile DNS message: random bytes, or a real query mutated (cut, flipped, counts, pointers, labels)."""
    kind = rng.random()
    if kind < 0.25:
        return rng.randbytes(rng.choice((0, 1, 5, 11, 12, 13, 30, 100, 512, 1500)))
    name = rng.choice(("army.ml", "phish.example", "fuzz.example", "a.b.c.d.example", "gmial.com", "."))
    qtype = rng.choice(("A", "AAAA", "MX", "TXT", "ANY", "HTTPS", "AXFR", "SOA"))
    msg = dns.message.make_query(name, qtype, use_edns=rng.choice((None, 0)), want_dnssec=rng.random() < 0.3)
    data = bytearray(msg.to_wire())
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        pos = rng.randrange(len(data)) if data else 0
        if op == 0 and data:
            data[pos] = rng.randrange(256)
        elif op == 1:
            del data[pos:]
        elif op == 2:
            data[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 3 and len(data) >= 12:
            field = rng.choice((4, 6, 8, 10))
            data[field : field + 2] = struct.pack("!H", rng.choice((0, 2, 3, 255, 65535)))
        elif op == 4 and len(data) >= 14:  # compression pointer loop in the question
            data[12:14] = b"\xc0\x0c"
        elif op == 5 and len(data) >= 12:  # a label over 63 or a name over 255
            data[12:] = rng.choice((b"\x40" + b"a" * 64, (b"\x3f" + b"a" * 63) * 5)) + b"\x00\x00\x01\x00\x01"
        elif op == 6 and len(data) >= 4:  # opcode other than QUERY (IQUERY, STATUS, NOTIFY, UPDATE, 15)
            data[2] = (data[2] & 0x87) | (rng.choice((1, 2, 4, 5, 15)) << 3)
        elif op == 7 and len(data) >= 4:  # QR set: a response sent as a query
            data[2] |= 0x80
        elif op == 8:  # a bad OPT: two of them, or a non-root owner
            data += rng.choice((b"", b"\x01a")) + b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00"
            if len(data) >= 12:
                data[10:12] = struct.pack("!H", (struct.unpack_from("!H", data, 10)[0] + 1) % 65536)
    return bytes(data)


REPLIED = frozenset({"query", "formerr", "notimp", "badvers"})  # kinds of datagram the guard must answer


def expected_kind(data: bytes) -> str:
    """What the guard must do with a datagram, as its wire scanner sees it: answer it ("query"), answer
    FORMERR or NOTIMP ("formerr", "notimp"), or send nothing ("unreadable", "response")."""
    try:
        wire.parse_query(data, "127.0.0.1", False)
    except wire.Unreadable:
        return "unreadable"
    except wire.NotQuery:
        return "response"
    except wire.NotImplementedOpcode:
        return "notimp"
    except wire.BadVersion:  # EDNS version above 0: BADVERS
        return "badvers"
    except MalformedQuery:
        return "formerr"
    return "query"


def seed() -> int:
    """The fuzz seed: RG_FUZZ_SEED to replay a run, else a fresh one (printed by the tests on failure)."""
    return int(os.environ.get("RG_FUZZ_SEED") or random.SystemRandom().randrange(2**32))


class EchoUpstream:
    """A stub upstream that survives any input: every readable query gets an answer, built without dnspython.

    answers maps a lowercase qname to an IPv4 address (an A record in the reply); anything else gets NXDOMAIN
    with an SOA. UDP and TCP on the same loopback port; stopped with close().
    """

    def __init__(
        self, answers: dict[str, str] | None = None, *, default: str | None = None, ttl: int = 300, port: int = 0
    ) -> None:
        self.answers, self.default, self.ttl = dict(answers or {}), default, ttl
        self.count = 0
        self.silent = False  # a blackhole: read every query, answer none
        self.delay = 0.0  # a stall: answer late
        for _ in range(50):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.udp.bind(("127.0.0.1", port))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket()
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        self.tcp.listen(128)
        self.address = f"127.0.0.1:{self.port}"
        self.stopped = False
        for target in (self._serve_udp, self._serve_tcp):
            threading.Thread(target=target, daemon=True).start()

    def reply(self, data: bytes) -> bytes | None:
        from resolverguard import wire
        from resolverguard.errors import ResolverGuardError

        self.count += 1
        try:
            query = wire.parse_query(data, "upstream", False)
        except ResolverGuardError:
            return None
        addr = self.answers.get(query.qname, self.default)
        if addr is not None and query.qtype == 1:
            rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, self.ttl, 4) + socket.inet_aton(addr)
            return wire.reply_for(query, 0, rr, (1, 0, 0))
        soa = b"\x00" + struct.pack("!HHIH", 6, 1, 60, 22) + b"\x00\x00"  # SOA . . with minimum 60
        soa += struct.pack("!IIIII", 1, 3600, 600, 86400, 60)
        return wire.reply_for(query, 3, soa, (0, 1, 0))

    def _serve_udp(self) -> None:
        while not self.stopped:
            try:
                data, addr = self.udp.recvfrom(65535)
                out = None if self.silent else self.reply(data)
                if out is not None and self.delay:
                    threading.Timer(self.delay, self._send_late, (out, addr)).start()
                elif out is not None:
                    self.udp.sendto(out, addr)
            except OSError:
                if self.stopped:
                    return

    def _send_late(self, out: bytes, addr: tuple) -> None:
        try:
            self.udp.sendto(out, addr)
        except OSError:
            pass

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
                while (head := recv_exact(conn, 2)) is not None:
                    data = recv_exact(conn, struct.unpack("!H", head)[0])
                    out = None if data is None or self.silent else self.reply(data)
                    if out is not None:
                        conn.sendall(struct.pack("!H", len(out)) + out)
            except OSError:
                return

    def close(self) -> None:
        self.stopped = True
        for s in (self.udp, self.tcp):
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in recvfrom/accept; close alone would not
            except OSError:
                pass
            s.close()


class SpoofingUpstream:
    """A UDP upstream that records each query's source port and ID and, when spoof is set, first sends
    three forgeries (wrong ID, wrong question, right reply from another port) before the real answer."""

    def __init__(self, addr: str = "192.0.2.44", spoof: bool = False) -> None:
        self.addr, self.spoof = addr, spoof
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.other.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.seen: list[tuple[int, int, str]] = []  # source port, ID, qname as sent
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import dns.rrset

        while True:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            q = dns.message.from_wire(data)
            self.seen.append((peer[1], q.id, q.question[0].name.to_text()))
            good = dns.message.make_response(q)
            good.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", self.addr))
            if self.spoof:
                evil = dns.message.make_response(q)
                evil.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", "203.0.113.66"))
                forged = evil.to_wire()
                self.sock.sendto(struct.pack("!H", (q.id + 1) % 65536) + forged[2:], peer)  # wrong ID
                other = dns.message.make_response(dns.message.make_query("evil.example", "A"))
                other.id = q.id
                self.sock.sendto(other.to_wire(), peer)  # right ID, wrong question
                self.other.sendto(forged, peer)  # right ID and question, wrong source port
                time.sleep(0.05)
            self.sock.sendto(good.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()
        self.other.close()


class UpstreamProcess:
    """An EchoUpstream in its own process, so it can really be killed (SIGKILL), stalled (SIGSTOP/SIGCONT),
    blackholed (SIGUSR1 toggles answering) and restarted on the same port."""

    def __init__(self, default: str = "192.0.2.1", ttl: int = 300, port: int = 0) -> None:
        import subprocess
        import sys

        self.default, self.ttl = default, ttl
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(port), default, str(ttl)], stdout=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            self.proc.kill()
            raise RuntimeError(f"upstream did not start: {line!r}")
        self.port = int(line.split()[1])
        self.address = f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.__init__(self.default, self.ttl, self.port)

    def stall(self, on: bool = True) -> None:
        import signal

        self.proc.send_signal(signal.SIGSTOP if on else signal.SIGCONT)

    def blackhole(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGUSR1)  # toggles: call again to answer again


def _main(argv: list[str]) -> None:
    import signal

    up = EchoUpstream(default=argv[1], ttl=int(argv[2]), port=int(argv[0]))

    def toggle(*_: object) -> None:
        up.silent = not up.silent

    signal.signal(signal.SIGUSR1, toggle)
    print(f"ready {up.port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
