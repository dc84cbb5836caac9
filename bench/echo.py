#!/usr/bin/env python3
"""The Python ceiling for bench/run.sh: a bare UDP server on uvloop that answers every datagram with one
fixed reply, only its ID patched (no parsing, no cache, no policy).

    python bench/echo.py PORT

Whatever resolverguard does per query beyond this is the cost of its own code, not of the language.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import dns.message
import dns.rrset

try:
    import uvloop
except ImportError:  # the ceiling is then asyncio's; bench.py reports which loop ran
    uvloop = None


def fixed_reply() -> bytes:
    """One A answer for h0.bench.example (what NSD would give), rendered once."""
    query = dns.message.make_query("h0.bench.example.", "A")
    reply = dns.message.make_response(query)
    reply.answer.append(dns.rrset.from_text("h0.bench.example.", 3600, "IN", "A", "192.0.2.1"))
    return reply.to_wire()


class Echo(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.tail = fixed_reply()[2:]
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) >= 12:
            self.transport.sendto(data[:2] + self.tail, addr)


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", port))
    try:
        await stop
    finally:
        transport.close()


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: echo.py PORT")
    (uvloop.run if uvloop else asyncio.run)(main(int(sys.argv[1])))
