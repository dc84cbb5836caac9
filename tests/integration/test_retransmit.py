"""Upstream exchanges (issue 13 High 2, Medium 4; issue 15 items 5 and 6): retransmission within servfail_after,
question-less FORMERR, ICMP port unreachable, EDE on SERVFAIL, logged state changes, a forwarding loop."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rcode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes import FakeUpstream, free_port  # noqa: E402
from hostile import config, scrape, start_with_metrics  # noqa: E402


class LossyUpstream(FakeUpstream):
    """Drops the first UDP datagram of every name; answers the retransmission."""

    def _reply(self, data: bytes, transport: str):
        rule, wire = super()._reply(data, transport)
        name = self.seen[-1][1].lower() if self.seen else ""
        if transport == "udp" and self.count(name, "udp") == 1:
            return rule, None
        return rule, wire


class NoEdnsUpstream(FakeUpstream):
    """An old server: FORMERR without a question (RFC 6891 7) to anything with an OPT record."""

    def _reply(self, data: bytes, transport: str):
        rule, wire = super()._reply(data, transport)
        if len(data) >= 12 and data[10:12] != b"\x00\x00":  # an additional record: the OPT
            return rule, data[:2] + b"\x80\x01" + b"\x00" * 8  # QR, FORMERR, every count 0
        return rule, wire


def _logged(guard, text: str) -> list[str]:
    """The guard's log lines holding text, polled (a thread reads its output) until one is there or 5 s pass."""
    deadline = time.monotonic() + 5
    while not (lines := [line for line in list(guard.lines) if text in line]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return lines


def _ede(msg: dns.message.Message) -> list[int]:
    return [o.code for o in msg.options if o.otype == dns.edns.EDE]


def test_first_datagram_lost_is_retransmitted_not_servfail(tmp_path, start_guard):
    up = LossyUpstream()
    try:
        up.on("lossy.example", "A", "lossy.example. 300 A 192.0.2.7")
        guard = start_guard("--upstream", up.address)  # one upstream, timeout 1 s, servfail_after 2.5 s
        r = guard.query("lossy.example", "A", timeout=6)
        assert r.rcode() == dns.rcode.NOERROR and r.answer[0][0].to_text() == "192.0.2.7"
        assert up.count("lossy.example", "udp") == 2  # the lost one and its retransmission
    finally:
        up.close()


def test_answer_slower_than_timeout_but_within_servfail_after(tmp_path, upstream, start_guard):
    upstream.on("slow.example", "A", "slow.example. 300 A 192.0.2.8", delay=1.4)
    guard = start_guard("--upstream", upstream.address)
    r = guard.query("slow.example", "A", timeout=6)
    assert r.rcode() == dns.rcode.NOERROR and r.answer[0][0].to_text() == "192.0.2.8"


def test_formerr_without_question_is_accepted_and_retried_without_edns(tmp_path, start_guard):
    up = NoEdnsUpstream()
    try:
        up.on("old.example", "A", "old.example. 300 A 192.0.2.5")
        guard, url = start_with_metrics(start_guard, "--upstream", up.address)
        r = guard.query("old.example", "A", use_edns=0, timeout=6)
        assert r.rcode() == dns.rcode.NOERROR and r.answer[0][0].to_text() == "192.0.2.5"
        m = scrape(url)
        assert m[f'resolverguard_upstream_up{{upstream="{up.address}"}}'] == 1  # never marked down for it
        assert m[f'resolverguard_upstream_errors_total{{kind="timeout",upstream="{up.address}"}}'] == 0
        assert "upstream down" not in guard.output()
    finally:
        up.close()


def test_closed_port_is_refused_with_ede_and_logged_once(tmp_path, start_guard):
    dead = f"127.0.0.1:{free_port()}"
    guard, url = start_with_metrics(start_guard, "--upstream", dead)
    for name in ("a.example", "b.example"):
        r = guard.query(name, "A", use_edns=0, timeout=6)
        assert r.rcode() == dns.rcode.SERVFAIL and _ede(r) == [23]  # Network Error
    m = scrape(url)
    assert m[f'resolverguard_upstream_errors_total{{kind="refused",upstream="{dead}"}}'] >= 1
    assert m[f'resolverguard_upstream_errors_total{{kind="timeout",upstream="{dead}"}}'] == 0
    assert m[f'resolverguard_upstream_up{{upstream="{dead}"}}'] == 0
    assert len(_logged(guard, "upstream down")) == 1  # WARNING once per change, not per query


def test_silent_upstream_servfail_carries_ede_22(tmp_path, upstream, start_guard):
    upstream.on("gone.example", "A", mode="drop")
    cfg = config(tmp_path, "timeout = 0.3\nservfail_after = 0.8\n")
    guard = start_guard("--config", cfg, "--upstream", upstream.address)
    r = guard.query("gone.example", "A", use_edns=0, timeout=6)
    assert r.rcode() == dns.rcode.SERVFAIL and _ede(r) == [22]  # No Reachable Authority
    assert "WARNING" in _logged(guard, "upstream down")[0]


class Relay:
    """A UDP relay that passes queries on unchanged (ID included), as a load balancer would: a loop path."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.target: tuple[str, int] | None = None
        self.passed = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65535)
            except OSError:
                return
            self.passed += 1
            if self.passed > 1000:
                continue

            def relay(data=data, addr=addr) -> None:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.settimeout(5)
                    s.sendto(data, self.target)
                    try:
                        self.sock.sendto(s.recv(65535), addr)
                    except OSError:
                        pass

            threading.Thread(target=relay, daemon=True).start()


def test_forwarding_loop_is_detected_logged_once_and_servfailed(tmp_path, start_guard):
    relay = Relay()
    try:
        guard = start_guard("--upstream", f"127.0.0.1:{relay.port}")
        relay.target = (guard.host, guard.port)
        r = guard.query("loop.example", "A", timeout=6)
        assert r.rcode() == dns.rcode.SERVFAIL
        logged = _logged(guard, "forwarding loop")
        assert len(logged) == 1 and "ERROR" in logged[0]
        assert relay.passed <= 4  # the loop is cut at the first turn (the query and a retransmission or two)
        r = guard.query("loop2.example", "A", use_edns=0, timeout=6)
        assert r.rcode() == dns.rcode.SERVFAIL and _ede(r) == [0]
    finally:
        relay.sock.close()
