"""A real Unbound enforces resolverguard's RPZ export: from a zonefile, and transferred by AXFR.

Skipped when unbound is not installed, failed instead when CI=true (tests/realprog.py).
All traffic stays on 127.0.0.1: see tests/unbound_helper.py.
"""

from __future__ import annotations

import itertools
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.rcode
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: realprog, unbound_helper

from fakes import free_port, recv_exact  # noqa: E402
from realprog import require_program  # noqa: E402
from unbound_helper import query, running_unbound  # noqa: E402

from resolverguard.export import Export, axfr_response, build_rpz  # noqa: E402
from resolverguard.rpz import PolicyTable, load_rpz  # noqa: E402

pytestmark = pytest.mark.realprog

ORIGIN = "rpz.resolverguard."
NEIGHBOURS = {"army.mil": ["army.ml", "amry.mil", "ok.partner.example"], "gmail.com": ["gmial.com"]}
OVERRIDES = """$TTL 300
@ SOA ns.rpz.invalid. hostmaster.rpz.invalid. 1 3600 600 86400 60
  NS ns.rpz.invalid.
ok.partner.example CNAME rpz-passthru.
"""
LOCAL_DATA = (
    "army.mil. 300 IN A 192.0.2.10",
    "mail.army.mil. 300 IN A 192.0.2.11",
    "ok.partner.example. 300 IN A 192.0.2.20",
)
# qname → (rcode, A answer or None)
EXPECTED = {
    "army.ml.": ("NXDOMAIN", None),
    "www.army.ml.": ("NXDOMAIN", None),
    "amry.mil.": ("NXDOMAIN", None),
    "gmial.com.": ("NXDOMAIN", None),
    "mail.gmial.com.": ("NXDOMAIN", None),
    "army.mil.": ("NOERROR", "192.0.2.10"),
    "mail.army.mil.": ("NOERROR", "192.0.2.11"),
    "ok.partner.example.": ("NOERROR", "192.0.2.20"),  # operator passthru beats the typo neighbour
}


@pytest.fixture(scope="module")
def _unbound_installed() -> None:
    require_program("unbound")


@pytest.fixture
def exported(tmp_path: Path, _unbound_installed: None) -> Export:
    overrides = tmp_path / "10-overrides.rpz"
    overrides.write_text(OVERRIDES)
    return build_rpz(PolicyTable([load_rpz(overrides)]), NEIGHBOURS, origin=ORIGIN)


def check_answers(port: int) -> None:
    for qname, (rcode, address) in EXPECTED.items():
        reply = query(port, qname, "A")
        got = [rd.address for rrset in reply.answer for rd in rrset if rrset.rdtype == 1]
        assert (dns.rcode.to_text(reply.rcode()), got[0] if got else None) == (rcode, address), qname


def test_unbound_enforces_exported_zonefile(tmp_path: Path, exported: Export) -> None:
    zonefile = tmp_path / "rpz.resolverguard.zone"
    zonefile.write_text(exported.text())
    with running_unbound(tmp_path, rpz_zonefile=zonefile, local_data=LOCAL_DATA) as unbound:
        check_answers(unbound.port)


class _Primary:
    """A stand-in for the guard's zone-transfer endpoint: axfr_response over UDP and TCP on one port."""

    def __init__(self, export: Export) -> None:
        self.export = export
        self.transfers = 0
        self.port = free_port()
        primary = self

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                while header := recv_exact(sock, 2):
                    wire = recv_exact(sock, struct.unpack("!H", header)[0])
                    replies = axfr_response(dns.message.from_wire(wire), primary.export)
                    primary.transfers += len(replies) > 1 or dns.message.from_wire(wire).question[0].rdtype != 6
                    for reply in replies:
                        sock.sendall(struct.pack("!H", len(reply)) + reply)

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                for reply in axfr_response(dns.message.from_wire(data), primary.export)[:1]:
                    sock.sendto(reply, self.client_address)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.servers = [
            socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Tcp),
            socketserver.ThreadingUDPServer(("127.0.0.1", self.port), Udp),
        ]
        for server in self.servers:
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def primary(exported: Export) -> Iterator[_Primary]:
    server = _Primary(exported)
    yield server
    server.close()


def test_unbound_transfers_export_by_axfr(tmp_path: Path, primary: _Primary) -> None:
    with running_unbound(tmp_path, rpz_primary=f"127.0.0.1@{primary.port}", local_data=LOCAL_DATA) as unbound:
        # The transfer is asynchronous. Until it lands, a name under *.army.ml goes to the dead
        # forwarder and times out; a fresh name per probe, so no probe joins an earlier one in flight.
        deadline = time.monotonic() + 10
        for attempt in itertools.count():
            try:
                if query(unbound.port, f"probe{attempt}.army.ml.", timeout=0.3).rcode() == dns.rcode.NXDOMAIN:
                    break
            except dns.exception.Timeout:
                pass
            assert time.monotonic() < deadline, (tmp_path / "unbound.log").read_text()
        check_answers(unbound.port)
        assert primary.transfers >= 1
