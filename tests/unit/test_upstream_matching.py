"""upstream._Exchange: only a reply from the upstream's address with our ID, QR and exact question is taken.

Real UDP sockets on 127.0.0.1: one plays the upstream, one an off-path spoofer.
"""

from __future__ import annotations

import asyncio
import socket

import dns.message
import dns.name

from resolverguard import wire
from resolverguard.upstream import _Exchange


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
    """Run one exchange; ``sends(sent, client_address, upstream, spoofer)`` delivers the datagrams."""
    client, upstream, spoofer = udp(), udp(), udp()
    client.setblocking(False)
    spoofs: list[str] = []
    try:
        q = wire.parse_query(dns.message.make_query("MiXeD.example", "A", id=4242).to_wire(), "127.0.0.1", False)
        ex = _Exchange(client, q.data, q.qend, upstream.getsockname(), spoofs.append)
        loop = asyncio.get_running_loop()
        loop.add_reader(client.fileno(), ex.readable)
        try:
            sends(q.data, client.getsockname(), upstream, spoofer)
            return await asyncio.wait_for(ex.future, 10), spoofs
        finally:
            loop.remove_reader(client.fileno())
    finally:
        for s in (client, upstream, spoofer):
            s.close()


def test_first_matching_reply_wins_and_every_rejected_one_is_reported():
    def sends(sent, to, upstream, spoofer):
        spoofer.sendto(reply_to(sent), to)  # right content, wrong source
        upstream.sendto(reply_to(sent, qid=4243), to)  # wrong ID
        upstream.sendto(reply_to(sent, qname="mixed.example."), to)  # 0x20 case not echoed
        upstream.sendto(sent, to)  # QR clear: our own query reflected
        upstream.sendto(b"\x10\x92", to)  # truncated garbage
        upstream.sendto(reply_to(sent), to)

    got, spoofs = asyncio.run(exchange(sends))
    assert dns.message.from_wire(got).id == 4242
    assert spoofs == ["wrong_source", "mismatch", "mismatch", "mismatch", "mismatch"]
