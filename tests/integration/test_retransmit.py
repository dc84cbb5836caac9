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
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes import FakeUpstream, free_port  # noqa: E402
from hostile import config, scrape, start_with_metrics, wait_metric  # noqa: E402


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


# ---- issue 26.4 / 26.5: odd replies, health that one client cannot flip, loops between two guards


class OddUpstream(FakeUpstream):
    """Replies as real servers do to what they will not or cannot answer: NSD's question-less REFUSED (to the
    classes it does not serve), a question-less SERVFAIL, and over UDP truncated replies cut before or inside
    their question (TC=1); over TCP it answers as scripted."""

    def _reply(self, data: bytes, transport: str):
        rule, wire = super()._reply(data, transport)
        if wire is None or len(data) < 12:
            return rule, wire
        name = self.seen[-1][1].lower()
        head = data[:2] + bytes((0x80 | (data[2] & 0x01),))
        if name.startswith("refused"):
            return rule, head + b"\x05" + b"\x00" * 8  # REFUSED, QDCOUNT 0
        if name.startswith("servfail"):
            return rule, head + b"\x02" + b"\x00" * 8
        if transport == "udp" and name.startswith("tcbare"):
            return rule, data[:2] + bytes((0x82 | (data[2] & 0x01),)) + b"\x00" + b"\x00" * 8  # TC, no question
        if transport == "udp" and name.startswith("tccut"):
            return rule, data[:2] + bytes((0x82 | (data[2] & 0x01),)) + b"\x00\x00\x01" + b"\x00" * 6 + data[12:20]
        return rule, wire


def _ede_text(msg: dns.message.Message) -> list[str]:
    return [o.text or "" for o in msg.options if o.otype == dns.edns.EDE]


def test_questionless_refused_is_taken_at_once_and_never_marks_the_upstream_down(tmp_path, start_guard):
    """NSD answers CLASS42/HS/NONE with REFUSED and no question: ten such queries moved all traffic away."""
    odd, other = OddUpstream(), FakeUpstream()
    try:
        other.on("after.example", "A", "after.example. 300 A 192.0.2.9")
        odd.on("after.example", "A", "after.example. 300 A 192.0.2.8")
        cfg = config(tmp_path, "timeout = 0.3\nservfail_after = 2.0\n")
        guard, url = start_with_metrics(
            start_guard, "--config", cfg, "--upstream", odd.address, "--upstream", other.address
        )
        for i in range(10):
            r = guard.query(f"refused{i}.example", "A", use_edns=0, timeout=6)
            assert r.rcode() == dns.rcode.NXDOMAIN  # the second upstream's answer: failed over on the REFUSED
        m = scrape(url)
        assert m[f'resolverguard_upstream_up{{upstream="{odd.address}"}}'] == 1
        assert m[f'resolverguard_upstream_errors_total{{kind="timeout",upstream="{odd.address}"}}'] == 0
        assert m[f'resolverguard_upstream_errors_total{{kind="mismatch",upstream="{odd.address}"}}'] == 0
        assert guard.query("after.example", "A").answer[0][0].to_text() == "192.0.2.8"  # still asked first
        assert other.count("after.example") == 0 and "upstream down" not in guard.output()
    finally:
        odd.close()
        other.close()


def test_questionless_refused_alone_is_servfail_naming_it_and_questionless_servfail_passes(tmp_path, start_guard):
    odd = OddUpstream()
    try:
        guard, url = start_with_metrics(start_guard, "--upstream", odd.address)
        r = guard.query("refused.example", "A", use_edns=0, timeout=6)
        assert r.rcode() == dns.rcode.SERVFAIL and _ede(r) == [23] and _ede_text(r) == [f"{odd.address} REFUSED"]
        r = guard.query("servfail.example", "A", use_edns=0, timeout=6)
        assert r.rcode() == dns.rcode.SERVFAIL and str(r.question[0].name) == "servfail.example."
        assert scrape(url)[f'resolverguard_upstream_up{{upstream="{odd.address}"}}'] == 1
    finally:
        odd.close()


@pytest.mark.parametrize("name", ["tcbare.example", "tccut.example"])
def test_truncated_reply_that_does_not_parse_is_retried_over_tcp(tmp_path, start_guard, name):
    odd = OddUpstream()
    try:
        odd.on(name, "A", f"{name}. 300 A 192.0.2.44")
        guard = start_guard("--upstream", odd.address)
        r = guard.query(name, "A", timeout=6)
        assert r.rcode() == dns.rcode.NOERROR and r.answer[0][0].to_text() == "192.0.2.44"
        assert odd.count(name, "udp") == 1 and odd.count(name, "tcp") == 1
    finally:
        odd.close()


@pytest.mark.parametrize("edns", [0, False], ids=["edns", "plain"])
def test_upstream_formerr_to_a_plain_query_is_servfail_with_ede(tmp_path, upstream, start_guard, edns):
    """The client's query was fine: FORMERR (after the plain retry) is the upstream's problem, not the client's."""
    upstream.on("formerr.example", "A", rcode=dns.rcode.FORMERR)
    guard, url = start_with_metrics(start_guard, "--upstream", upstream.address)
    r = guard.query("formerr.example", "A", use_edns=edns, timeout=6)
    assert r.rcode() == dns.rcode.SERVFAIL
    if edns is not False:
        assert _ede(r) == [23] and _ede_text(r) == [f"{upstream.address} FORMERR"]
    assert scrape(url)[f'resolverguard_upstream_up{{upstream="{upstream.address}"}}'] == 1


def test_one_query_the_upstream_drops_does_not_mark_it_down_while_it_answers_others(tmp_path, upstream, start_guard):
    upstream.on("odd.example", "A", mode="drop")
    upstream.on("fine.example", "A", "fine.example. 300 A 192.0.2.3")
    cfg = config(tmp_path, "timeout = 0.3\nservfail_after = 0.8\n")
    guard, url = start_with_metrics(start_guard, "--config", cfg, "--upstream", upstream.address)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(6)
        odd, fine = dns.message.make_query("odd.example", "A"), dns.message.make_query("fine.example", "A")
        s.sendto(odd.to_wire(), (guard.host, guard.port))  # first: its try is out before the other's
        s.sendto(fine.to_wire(), (guard.host, guard.port))
        replies = {m.id: m for m in (dns.message.from_wire(s.recv(4096)) for _ in range(2))}
    assert replies[fine.id].answer[0][0].to_text() == "192.0.2.3"
    assert replies[odd.id].rcode() == dns.rcode.SERVFAIL
    assert scrape(url)[f'resolverguard_upstream_up{{upstream="{upstream.address}"}}'] == 1
    assert "upstream down" not in guard.output()


def test_servfail_ede_names_every_upstream_that_failed(tmp_path, start_guard):
    first, second = FakeUpstream(), FakeUpstream()
    try:
        for up in (first, second):
            up.on("gone.example", "A", mode="drop")
        cfg = config(tmp_path, "timeout = 0.2\nservfail_after = 0.8\n")
        guard = start_guard("--config", cfg, "--upstream", first.address, "--upstream", second.address)
        r = guard.query("gone.example", "A", use_edns=0, timeout=6)
        assert r.rcode() == dns.rcode.SERVFAIL and _ede(r) == [22]
        [text] = _ede_text(r)
        assert f"{first.address} timeout" in text and f"{second.address} timeout" in text, text
    finally:
        first.close()
        second.close()


def _total(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


@pytest.mark.parametrize("edns", [0, False], ids=["edns", "plain"])
def test_loop_between_two_guards_is_cut_on_the_second_pass(tmp_path, start_guard, edns):
    """A forwards to B, B to A: before, ~560 internal queries per client query; now A refuses its own query."""
    port_a, port_b = free_port(), free_port()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    guard_a, url_a = start_with_metrics(
        start_guard, "--listen", f"127.0.0.1:{port_a}", "--upstream", f"127.0.0.1:{port_b}", zones=tmp_path / "a"
    )
    guard_b, url_b = start_with_metrics(
        start_guard, "--listen", f"127.0.0.1:{port_b}", "--upstream", f"127.0.0.1:{port_a}", zones=tmp_path / "b"
    )
    r = guard_a.query("circle.example", "A", use_edns=edns, timeout=6)
    assert r.rcode() == dns.rcode.SERVFAIL
    if edns is not False:
        assert _ede(r) == [0]  # "forwarding loop", from A's refusal of its own query, passed back through B
    assert wait_metric(url_a, "resolverguard_forwarding_loops_total", lambda v: v >= 1) == 1
    a, b = scrape(url_a), scrape(url_b)
    assert _total(a, "resolverguard_queries_total") == 2  # the client's, and its own back from B
    assert _total(b, "resolverguard_queries_total") == 1
    assert b["resolverguard_forwarding_loops_total"] == 0
    assert len(_logged(guard_a, "forwarding loop")) == 1
