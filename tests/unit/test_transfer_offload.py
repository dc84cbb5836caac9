"""A zone transfer is built off the event loop: other clients are answered while a large AXFR renders."""

from __future__ import annotations

import asyncio
import threading

import dns.message
import dns.rcode
from corefix import policy
from prometheus_client import CollectorRegistry

from resolverguard import wire
from resolverguard.cache import Cache
from resolverguard.config import Config
from resolverguard.metrics import Metrics
from resolverguard.pipeline import build_pipeline
from resolverguard.server import Server
from resolverguard.upstream import Upstream, UpstreamPool

ORIGIN = "rpz.resolverguard."


class SlowExport:
    """Stands in for transfer.ZoneExport: its AXFR takes as long as the test wants (or raises)."""

    def __init__(self, fail: bool = False) -> None:
        self.started, self.release, self.fail = threading.Event(), threading.Event(), fail
        self.thread: str | None = None

    def is_transfer(self, query: wire.Query) -> bool:
        return query.qtype == 252 and query.tcp

    def answer(self, query: wire.Query) -> list[bytes] | None:
        if query.qtype != 252:
            return None
        self.thread = threading.current_thread().name
        self.started.set()
        assert self.release.wait(30), "the test never released the transfer"
        if self.fail:
            raise RuntimeError("rendering failed")
        return [wire.reply_for(query, 0), wire.reply_for(query, 0)]


def server_with(export: SlowExport) -> tuple[Server, Metrics]:
    metrics = Metrics(CollectorRegistry())
    pol = policy()
    pool = UpstreamPool([Upstream("127.0.0.1", 9)])  # never asked: only blocked names are queried
    pipeline = build_pipeline(Config(protect=("army.mil", "gmail.com")), lambda: pol, Cache(100), pool, metrics)
    return Server(pipeline, metrics, export=export), metrics


async def until(predicate, what: str, deadline: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not predicate():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def wire_query(name: str, qtype: str) -> bytes:
    return dns.message.make_query(name, qtype).to_wire()


def test_other_queries_are_answered_while_an_axfr_renders() -> None:
    export = SlowExport()
    server, metrics = server_with(export)

    async def scenario() -> None:
        transfer, other = [], []
        server.answer(wire_query(ORIGIN, "AXFR"), "127.0.0.1", True, transfer.append)
        await until(export.started.is_set, "the transfer to start")
        assert transfer == []  # still rendering
        server.answer(wire_query("gmial.com", "A"), "127.0.0.1", False, other.append)
        assert len(other) == 1 and dns.message.from_wire(other[0]).rcode() == dns.rcode.NXDOMAIN
        assert transfer == []  # answered before the transfer finished: the loop was free
        export.release.set()
        await until(lambda: transfer, "the transfer's messages")
        assert len(transfer) == 1 and len(transfer[0]) == 2  # every message, sent once over TCP

    asyncio.run(scenario())
    assert export.thread != threading.main_thread().name


def test_a_failing_transfer_is_servfail_and_counted() -> None:
    export = SlowExport(fail=True)
    export.release.set()
    server, metrics = server_with(export)

    async def scenario() -> list:
        sent: list = []
        server.answer(wire_query(ORIGIN, "AXFR"), "127.0.0.1", True, sent.append)
        await until(lambda: sent, "the SERVFAIL")
        return sent

    sent = asyncio.run(scenario())
    assert dns.message.from_wire(sent[0][0]).rcode() == dns.rcode.SERVFAIL
    assert metrics.registry.get_sample_value("resolverguard_internal_errors_total") == 1
