"""upstream.UpstreamPool: only a reply from the upstream's address with our ID, QR and exact question is taken.

Real UDP sockets on 127.0.0.1: one plays the upstream, one an off-path spoofer; the pool's own socket is one of
its random pooled ports.
"""

from __future__ import annotations

import asyncio
import socket

import dns.message
import dns.name

from resolverguard import wire
from resolverguard.upstream import Upstream, UpstreamPool


def udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def reply_to(sent: bytes, qname: str | None = None, qid: int | None = None) -> bytes:
    msg = dns.message.from_wire(sent)
    reply = dns.message.make_response(msg)
    if qname is not None:
        reply.question[0].name = dns.name.from_text(qname)
    if qid is not None:
        reply.id = qid
    return reply.to_wire()


async def exchange(sends) -> tuple[bytes, list[str]]:
    """Resolve one query; ``sends(sent, pool_address, upstream, spoofer)`` delivers the datagrams."""
    upstream, spoofer = udp(), udp()
    upstream.setblocking(False)
    spoofs: list[str] = []
    try:
        host, port = upstream.getsockname()
        pool = UpstreamPool([Upstream(host, port)], observe=lambda u, kind, s: spoofs.append(kind), timeout=5)
        q = wire.parse_query(dns.message.make_query("MiXeD.example", "A", id=4242).to_wire(), "127.0.0.1", False)
        loop = asyncio.get_running_loop()
        got = loop.create_future()
        pool.submit(q, got.set_result)
        sent, to = await loop.sock_recvfrom(upstream, 65535)
        sends(sent, to, upstream, spoofer)
        return await asyncio.wait_for(got, 10), spoofs
    finally:
        for s in (upstream, spoofer):
            s.close()


def test_first_matching_reply_wins_and_every_rejected_one_is_reported():
    def sends(sent, to, upstream, spoofer):
        qid = int.from_bytes(sent[:2], "big")
        spoofer.sendto(reply_to(sent), to)  # right content, wrong source
        upstream.sendto(reply_to(sent, qid=(qid + 1) % 65536), to)  # wrong ID
        upstream.sendto(reply_to(sent, qname="mixed.example."), to)  # 0x20 case not echoed
        upstream.sendto(sent, to)  # QR clear: our own query reflected
        upstream.sendto(sent[:2], to)  # truncated garbage
        upstream.sendto(reply_to(sent), to)

    got, spoofs = asyncio.run(exchange(sends))
    assert dns.message.from_wire(got).id == 4242  # re-addressed to the client
    assert spoofs == ["wrong_source", "mismatch", "mismatch", "mismatch", "mismatch", "NOERROR"]
