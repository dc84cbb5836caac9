#!/usr/bin/env python3
"""In-process cost of the synchronous hot path (Server.answer without sockets): µs per query, optional cProfile.

    python bench/hotpath.py [--profile] [--n 200000]

Builds the pipeline as `resolverguard serve` does (zones/ of the repository, default config), fills the cache
with one reply per name, then times Server.answer() for cache hits, typo blocks and a 90/10 mix. No I/O: what
it measures is the Python work per query that the socket benchmark (bench/run.sh) pays on top of the syscalls.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path

import dns.message
import dns.rrset

from resolverguard import wire
from resolverguard.cache import Cache
from resolverguard.config import load_config
from resolverguard.metrics import Metrics
from resolverguard.pipeline import build_pipeline
from resolverguard.reload import PolicyHolder
from resolverguard.server import Server
from resolverguard.upstream import Upstream, UpstreamPool

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    cfg = load_config(None, {"zones_dir": str(REPO / "zones"), "events": ""})
    metrics = Metrics()
    holder = PolicyHolder(cfg, metrics)
    cache = Cache(cfg.cache_entries, cfg.cache_bytes)
    pool = UpstreamPool([Upstream("127.0.0.1", 9)])
    server = Server(build_pipeline(cfg, holder.current, cache, pool, metrics), metrics)
    hits, typos = [], ["gmial.com.", "yahooo.com.", "outlok.com.", "hotmial.com."]
    for i in range(1000):
        q = dns.message.make_query(f"h{i}.bench.example.", "A")
        q.id = i
        data = q.to_wire()
        reply = dns.message.make_response(q)
        reply.answer.append(dns.rrset.from_text(q.question[0].name, 3600, "IN", "A", "192.0.2.1"))
        cache.put(wire.parse_query(data, "127.0.0.1", False), reply.to_wire())
        hits.append(data)
    blocked = [dns.message.make_query(n, "A").to_wire() for n in typos]
    sink = []
    send = sink.append
    mixes = {
        "cache-hit": hits,
        "blocked": blocked,
        "mixed": [blocked[i % 4] if i % 10 == 0 else hits[i] for i in range(1000)],
    }
    for name, msgs in mixes.items():
        for m in msgs:  # warm: decisions and rendered blocks are remembered
            server.answer(m, "127.0.0.1", False, send)
        sink.clear()
        count = len(msgs)
        prof = cProfile.Profile() if args.profile else None
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        for i in range(args.n):
            server.answer(msgs[i % count], "127.0.0.1", False, send)
        if prof:
            prof.disable()
        dt = time.perf_counter() - t0
        assert all(r is not None for r in sink[:10]), "no reply"
        sink.clear()
        print(f"{name:10} {dt / args.n * 1e6:6.2f} µs/query")
        if prof:
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
