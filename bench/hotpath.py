#!/usr/bin/env python3
"""In-process cost of the hot path: µs per cache hit, block and miss through Server.answer(), optional cProfile.

    python bench/hotpath.py [--profile] [--n 200000] [--misses 20000] [--window 100]

Builds the guard as `resolverguard serve` does (app.App with the repository's zones/ and the default
config) but listens on no client socket: queries go straight into Server.answer() and replies into a list.
The upstream is a tiny responder in a child process on 127.0.0.1 (every A query gets one A record, its
question and OPT echoed), so this process's CPU time is the guard's alone.

- miss: N unique names, --window of them in flight at once, each timed from Server.answer() through the
  forwarder and the upstream socket to the reply; reported as wall µs and this process's CPU µs per miss;
- cache-hit: 1,000 names made cached by asking them once (misses, like any client), then looped;
- blocked: typo neighbours of the default protected domains, looped; mixed: 90% hits, 10% blocks;
- fast hit / fast block (compiled and python): 64 of the hits and the blocks once remembered (a hit for at
  most a second: its TTLs count down), as the UDP fast path
  (resolverguard/fastpath.py) answers them: batches of 64 datagrams sent from a client socket of this process,
  then FastTable.drain() timed alone (its recvmmsg/sendmmsg or recvfrom/sendto included).

Only public entry points are used (App, Server.answer), so the figures stay comparable when the
internals change.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dns.message

from resolverguard import fastpath
from resolverguard.app import App
from resolverguard.config import load_config
from resolverguard.server import UdpListener

try:
    import uvloop
except ImportError:
    uvloop = None

REPO = Path(__file__).resolve().parent.parent
CLIENT = "127.0.0.1"
TYPOS = ("gmial.com.", "yahooo.com.", "outlok.com.", "hotmial.com.")
ANSWER = bytes.fromhex("c00c00010001") + (3600).to_bytes(4, "big") + bytes.fromhex("0004c0000201")  # 192.0.2.1


# ---------------------------------------------------------------- the upstream (child process)


class Responder(asyncio.DatagramProtocol):
    """Answers every query with one A record for its question (ID, question and OPT echoed)."""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        end = 12
        while end < len(data) and data[end]:
            end += data[end] + 1
        end += 5  # the root label, QTYPE and QCLASS
        if end > len(data):
            return
        flags = b"\x81\x80" if data[2] & 1 else b"\x80\x80"  # QR, RA, RD copied
        self.transport.sendto(data[:2] + flags + b"\x00\x01\x00\x01\x00\x00" + data[10:end] + ANSWER + data[end:], addr)


async def respond() -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    transport, _ = await loop.create_datagram_endpoint(Responder, local_addr=("127.0.0.1", 0))
    print(transport.get_extra_info("sockname")[1], flush=True)
    try:
        await stop
    finally:
        transport.close()


# ---------------------------------------------------------------- timing


def queries(names: list[str]) -> list[bytes]:
    return [dns.message.make_query(n, "A").to_wire() for n in names]


async def exchange(answer: Callable, msgs: list[bytes], window: int) -> tuple[float, float, list]:
    """Send msgs through answer() keeping `window` unanswered; (wall s, CPU s, replies) once all are answered."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    replies: list = []
    todo = iter(msgs)

    def send(reply) -> None:
        replies.append(reply)
        nxt = next(todo, None)
        if nxt is not None:
            loop.call_soon(answer, nxt, CLIENT, False, send)  # not from inside the reply path: no recursion
        elif len(replies) == len(msgs) and not done.done():
            done.set_result(None)

    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(min(window, len(msgs))):
        answer(next(todo), CLIENT, False, send)
    await asyncio.wait_for(done, 60)
    return time.perf_counter() - w0, time.process_time() - c0, replies


def looped(answer: Callable, msgs: list[bytes], n: int) -> tuple[float, float, list]:
    """n synchronous answers cycling over msgs; (wall s, CPU s, replies)."""
    replies: list = []
    send = replies.append
    count = len(msgs)
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        answer(msgs[i % count], CLIENT, False, send)
    return time.perf_counter() - w0, time.process_time() - c0, replies


def fast_path(server, msgs: list[bytes], n: int, compiled: bool) -> tuple[float, float, list]:
    """n answers from the fast table, in batches of 64 datagrams over loopback; (wall s, CPU s, replies) of
    FastTable.drain() alone."""
    server.fast.compiled = compiled
    server.fast.clients.clear()  # the two loops key clients differently: whom to answer is decided anew
    server.fast.eligible.clear()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    listener, addr = UdpListener(server, sock), sock.getsockname()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind((CLIENT, 0))
    client.settimeout(5)
    for msg in msgs:  # once through the pipeline: remembered from here on
        client.sendto(msg, addr)
        listener.readable()  # a hit or a block is answered at once, within this call
        while not _ready(client):  # (waits up to the client's timeout for the reply)
            listener.readable()
        client.recv(65535)
    replies: list = []
    wall = cpu = 0.0
    batch, refreshed = fastpath.BATCH, 0
    for start in range(0, n, batch):
        size = min(batch, n - start)
        for i in range(start, start + size):
            client.sendto(msgs[i % len(msgs)], addr)
        w0, c0, read = time.perf_counter(), time.process_time(), 0
        while read < size:
            got, slow = server.fast.drain(sock)
            for data, peer in slow:  # a hit whose TTLs just counted down: the pipeline re-remembers it
                server.answer(data, peer[0], False, listener._replier(peer))
            refreshed += len(slow)
            read += got
        wall, cpu = wall + time.perf_counter() - w0, cpu + time.process_time() - c0
        replies += [client.recv(65535) for _ in range(size)]
    client.close()
    listener.close()
    if refreshed:
        print(f"  ({refreshed} of {n} answered by the pipeline: their remembered reply had gone stale)")
    return wall, cpu, replies


def _ready(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(65535, socket.MSG_PEEK))
    except OSError:
        return False


def show(name: str, n: int, wall: float, cpu: float, replies: list, prof: cProfile.Profile | None) -> None:
    if len(replies) != n or any(r is None for r in replies[:10]):
        raise SystemExit(f"{name}: {len(replies)} replies to {n} queries (not answered in process?)")
    print(f"{name:21} {wall / n * 1e6:7.2f} µs/query wall  {cpu / n * 1e6:7.2f} µs/query CPU  ({n:,} queries)")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)


async def run(args: argparse.Namespace, upstream: int) -> None:
    cfg = load_config(None, {"zones_dir": str(REPO / "zones"), "events": "", "upstreams": (f"127.0.0.1:{upstream}",)})
    server = App(cfg).server
    answer = server.answer
    gc.freeze()  # as App.run() does after start-up: the policy's objects leave the collector's scans
    prof = cProfile.Profile() if args.profile else None
    hits = queries([f"h{i}.bench.example." for i in range(1000)])
    await exchange(answer, hits, args.window)  # misses now: cached from here on
    await exchange(answer, queries([f"warm{i}.bench.example." for i in range(1000)]), args.window)

    misses = queries([f"m{i}.bench.example." for i in range(args.misses)])
    if prof:
        prof.enable()
    wall, cpu, replies = await exchange(answer, misses, args.window)
    if prof:
        prof.disable()
    show("miss", len(misses), wall, cpu, replies, prof)

    blocked = queries(list(TYPOS))
    mixes = {
        "cache-hit": hits,
        "blocked": blocked,
        "mixed": [blocked[i % 4] if i % 10 == 0 else hits[i] for i in range(1000)],
    }
    for name, msgs in mixes.items():
        looped(answer, msgs, len(msgs))  # warm: decisions and rendered blocks are remembered
        prof = cProfile.Profile() if args.profile else None
        if prof:
            prof.enable()
        wall, cpu, replies = looped(answer, msgs, args.n)
        if prof:
            prof.disable()
        show(name, args.n, wall, cpu, replies, prof)
    for compiled in (True, False) if fastpath._fastudp is not None else (False,):
        kind = "compiled" if compiled else "python"
        for name, msgs in (("fast hit", hits[:64]), ("fast block", blocked)):  # warmed within their second
            wall, cpu, replies = fast_path(server, msgs, args.n // 4, compiled)
            show(f"{name} ({kind})", args.n // 4, wall, cpu, replies, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="queries per hit/blocked/mixed loop")
    ap.add_argument("--misses", type=int, default=20_000, help="unique names for the miss run")
    ap.add_argument("--window", type=int, default=100, help="misses in flight at once (dnsperf -q)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--responder", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    runner = uvloop.run if uvloop else asyncio.run
    if args.responder:
        runner(respond())
        return
    child = subprocess.Popen([sys.executable, __file__, "--responder"], stdout=subprocess.PIPE, text=True)
    try:
        upstream = int(child.stdout.readline())
        print(f"loop: {'uvloop ' + uvloop.__version__ if uvloop else 'asyncio'}; upstream: pid {child.pid}")
        runner(run(args, upstream))
    finally:
        child.terminate()
        child.wait(10)


if __name__ == "__main__":
    main()
