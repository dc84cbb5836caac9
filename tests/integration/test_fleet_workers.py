"""--workers 2 with the export: every worker answers SOA with the same serial, before and after a change."""

from __future__ import annotations

import time

import dns.message
import dns.query
import dns.rcode
from polling import wait_until


def serials(port: int, n: int = 40) -> set[int | None]:
    """SOA serials from n queries, each from a fresh socket (a new source port: SO_REUSEPORT spreads them)."""
    out: set[int | None] = set()
    for _ in range(n):
        reply = dns.query.udp(dns.message.make_query("rpz.resolverguard.", "SOA"), "127.0.0.1", port=port, timeout=3)
        out.add(reply.answer[0][0].serial if reply.rcode() == dns.rcode.NOERROR else None)
    return out


def one_serial(port: int) -> int:
    """The one serial every worker answers, once they all do (a worker logs "rendered" before it has published
    or found the serial: until then it answers SERVFAIL); AssertionError if they still disagree at the deadline."""

    def agreed() -> int | None:
        seen = serials(port)
        return next(iter(seen)) if len(seen) == 1 and None not in seen else None

    return wait_until(agreed, what="every worker answering one serial")


def wait_rendered(guard, count: int) -> None:
    deadline = time.monotonic() + 60
    while guard.output().count("rpz export rendered") < count:
        assert time.monotonic() < deadline, guard.output()
        time.sleep(0.05)


def test_workers_answer_one_serial(tmp_path, upstream, start_guard) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "a.protect").write_text("army.mil\n")
    cfg = tmp_path / "guard.toml"
    cfg.write_text(f'upstreams = ["{upstream.address}"]\n[export]\nstate_dir = "{tmp_path / "state"}"\n')
    guard = start_guard("--config", str(cfg), "--workers", "2", zones=zones)
    wait_rendered(guard, 2)  # both workers built the zone; one published it, the other found it published
    first = one_serial(guard.port)
    assert guard.output().count("rpz export published") == 1
    (zones / "b.protect").write_text("navy.mil\n")
    wait_rendered(guard, 4)
    second = one_serial(guard.port)
    assert second > first
    assert guard.output().count("rpz export published") == 2
