"""TCP bounds: a client that never reads cannot make the guard buffer without limit; slow queries and dribbled
frames cannot lock new TCP clients out (issue 13, High 1 and Medium 3)."""

from __future__ import annotations

import select
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import dns.message

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostile import config, rss_kib, scrape, start_with_metrics  # noqa: E402

QUERIES = 10_000
GROWTH_BOUND_KIB = 24 * 1024  # 64 replies in flight + 64 KiB write buffer + 64 KiB input per connection


def _answered(url: str) -> float:
    return sum(v for k, v in scrape(url).items() if k.startswith("resolverguard_responses_total{"))


def _stable(url: str, pid: int, deadline: float) -> tuple[float, int]:
    """Poll the reply counter until it stops moving (three equal scrapes) or reaches QUERIES; and the peak RSS."""
    seen: list[float] = []
    peak = 0
    while time.monotonic() < deadline:
        seen.append(_answered(url))
        peak = max(peak, rss_kib(pid))
        if seen[-1] >= QUERIES + 1 or seen[-3:] == [seen[-1]] * 3 and len(seen) >= 3:
            break
        time.sleep(0.3)
    return seen[-1], peak


def test_pipelining_client_that_never_reads_is_bounded(tmp_path, upstream, start_guard):
    upstream.on("big.example", "TXT", mode="big")  # ~2.8 KB per reply
    cfg = config(tmp_path, "[tcp]\nidle_timeout = 30\n")
    guard, url = start_with_metrics(start_guard, "--config", cfg, "--upstream", upstream.address)
    assert guard.query("big.example", "TXT", tcp=True).answer  # warm: cached from now on
    baseline = rss_kib(guard.proc.pid)
    frames = b"".join(
        struct.pack("!H", len(w)) + w
        for w in (dns.message.make_query("big.example", "TXT", id=i % 65536).to_wire() for i in range(QUERIES))
    )
    client = socket.create_connection((guard.host, guard.port))
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sender = threading.Thread(target=lambda: _send_all(client, frames), daemon=True)
    sender.start()
    answered, peak = _stable(url, guard.proc.pid, time.monotonic() + 60)
    assert answered < QUERIES + 1, "the guard read and answered every query of a client that never reads"
    assert peak - baseline < GROWTH_BOUND_KIB, f"RSS grew {peak - baseline} KiB"
    # the client leaves without reading: reset, the guard drops what it held for it
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    deadline = time.monotonic() + 20
    while rss_kib(guard.proc.pid) - baseline > 8 * 1024 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rss_kib(guard.proc.pid) - baseline <= 8 * 1024
    assert guard.query("big.example", "TXT", tcp=True).answer  # still serving
    assert guard.proc.poll() is None and "Traceback" not in guard.output()


def _send_all(s: socket.socket, data: bytes) -> None:
    try:
        s.sendall(data)
    except OSError:  # we reset it from the test
        pass


def test_slow_queries_do_not_lock_new_tcp_clients_out(tmp_path, upstream, start_guard):
    upstream.on("slow.example", "A", "slow.example. 300 A 192.0.2.9", delay=3.0)
    upstream.on("x.example", "A", "x.example. 300 A 192.0.2.3")
    cfg = config(tmp_path, "[tcp]\nmax_connections = 5\nidle_timeout = 10\n")
    guard = start_guard("--config", cfg, "--upstream", upstream.address)
    held = []
    try:
        for i in range(5):  # each holds one query the upstream is slow to answer
            s = socket.create_connection((guard.host, guard.port), timeout=10)
            w = dns.message.make_query("slow.example", "A", id=i).to_wire()
            s.sendall(struct.pack("!H", len(w)) + w)
            held.append(s)
        deadline = time.monotonic() + 10
        while upstream.count("slow.example") < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert guard.query("x.example", "A", tcp=True).answer[0][0].to_text() == "192.0.2.3"
    finally:
        for s in held:
            s.close()


def test_a_frame_dribbled_a_byte_at_a_time_is_cut_off(tmp_path, upstream, start_guard):
    cfg = config(tmp_path, "[tcp]\nidle_timeout = 0.5\n")
    guard = start_guard("--config", cfg, "--upstream", upstream.address)
    with socket.create_connection((guard.host, guard.port), timeout=10) as s:
        s.sendall(b"\xff\xff")  # a 65535-octet frame, then one octet at a time, never completed
        deadline = time.monotonic() + 20
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                s.send(b"\x00")
            except OSError:
                closed = True
                break
            ready, _, _ = select.select([s], [], [], 0.2)
            if ready:
                try:
                    closed = s.recv(1) == b""
                except OSError:
                    closed = True
        assert closed, "a connection that never completes its frame stays open"
