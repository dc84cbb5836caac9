"""The policy service of a running guard on loopback: keep-alive, limits, bad input, and exceptions expiring live.

Every bad request gets `action=451 4.3.5 ...`, a closed connection and a counter, and the service goes on
answering; an exception ends by itself in DNS and the policy service (no reload), with the gauges following.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import dns.rcode
from fakes import free_port
from polling import wait_until

from resolverguard.exceptions import iso

RCPT = b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=alice@example.org\nrecipient=%s\n\n"


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_reply(sock: socket.socket) -> bytes:
    """Until a whole reply (ends in an empty line) or the server closes; the socket timeout is the deadline."""
    data = b""
    while not data.endswith(b"\n\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def closed(sock: socket.socket) -> bool:
    return sock.recv(1) == b""


def json_lines(tmp_path) -> list[dict]:
    return [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]


def metric(port: int, text: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # noqa: S310 (loopback)
        for line in resp.read().decode().splitlines():
            if line.startswith(text + " "):
                return float(line.split()[-1])
    return None


def test_policy_service_limits_bad_input_and_live_expiry(start_guard, upstream, tmp_path):
    upstream.on("army.ml", "A", "army.ml. 300 A 192.0.2.9")
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "p.protect").write_text("army.mil\n")
    ends = int(time.time()) + 4
    (zones / "exceptions.toml").write_text(
        f'# granted by IT\n[[exception]]\nname = "army.ml"\nowner = "it-desk"\nreason = "test"\nuntil = {iso(ends)}\n'
    )
    port, mport = free_port(), free_port()
    config = tmp_path / "guard.toml"
    config.write_text("[policy]\nmax_connections = 3\nrequest_timeout = 1.0\n")
    guard = start_guard(
        "-c", str(config), "--upstream", upstream.address, "--policy-listen", f"127.0.0.1:{port}",
        "--metrics", f"127.0.0.1:{mport}", zones=zones,
    )  # fmt: skip
    wait_until(lambda: "policy service listening" in guard.output(), "the policy service")
    series = 'resolverguard_submission_refusals_total{mode="reject",protected_domain="army.mil",typo_class="tld_typo"}'
    assert metric(mport, series) == 0.0  # pre-declared
    assert metric(mport, "resolverguard_exceptions_active") == 1.0
    assert metric(mport, "resolverguard_exceptions_expiring") == 1.0

    # while the exception holds: DNS passes army.ml, the policy service says DUNNO; one connection, kept open
    assert guard.query("army.ml", "A").rcode() == dns.rcode.NOERROR
    with connect(port) as s:
        s.sendall(RCPT % b"user@army.ml")
        assert read_reply(s) == b"action=DUNNO\n\n"
        s.sendall(RCPT % b"user@army.mil")
        assert read_reply(s) == b"action=DUNNO\n\n"

        # it ends by itself: no reload, within a few seconds
        wait_until(lambda: guard.query("army.ml", "A").rcode() == dns.rcode.NXDOMAIN, "the expiry in DNS", 15, 0.2)
        s.sendall(RCPT % b"user@army.ml")
        reply = read_reply(s)
    assert reply.startswith(b"action=550 5.1.2 ") and b"Did you mean <user@army.mil>?" in reply
    assert "exceptions expired" in guard.output() and "generation=1" in guard.output()
    events = wait_until(lambda: len(e := json_lines(tmp_path)) >= 2 and e, "the audit events")
    lookup = next(e for e in events if e.get("qname") == "army.ml")  # the audit line of the allowed lookup
    assert lookup["outcome"] == "passthru" and lookup["rule"] == "exceptions:army.ml"
    allowed = next(e for e in events if e.get("event") == "exception_allowed")
    assert (allowed["exception"], allowed["owner"], allowed["sender"]) == ("army.ml", "it-desk", "alice@example.org")
    refused = wait_until(lambda: [e for e in json_lines(tmp_path) if e.get("event") == "submission_refusal"], "event")
    assert refused[0]["recipient"] == "user@army.ml" and refused[0]["sender"] == "alice@example.org"
    assert metric(mport, series) == 1.0
    assert metric(mport, "resolverguard_exceptions_active") == 0.0

    # bad input: each gets 451 4.3.5 and a closed connection, counted
    for data, kind in [
        (b"x" * 5000, "line_too_long"),
        (b"no equals\n", "malformed"),
        (b"".join(b"a%d=1\n" % i for i in range(101)), "too_many_attributes"),
        (b"request=smtpd_access_policy\n", "timeout"),  # never finished: the request deadline
    ]:
        with connect(port) as s:
            s.sendall(data)
            reply = read_reply(s)
            assert reply.startswith(b"action=451 4.3.5 resolverguard policy service: "), (kind, reply)
            assert closed(s), kind
        assert metric(mport, f'resolverguard_policy_errors_total{{kind="{kind}"}}') == 1.0, kind

    # the connection cap: the 4th of 4 open connections is refused, the others still answer
    held = [connect(port) for _ in range(3)]
    try:
        for s in held:  # each admitted and answered before the next one connects
            s.sendall(RCPT % b"user@army.mil")
            assert read_reply(s) == b"action=DUNNO\n\n"
        with connect(port) as extra:
            assert read_reply(extra).startswith(b"action=451 4.3.5 ") and closed(extra)
    finally:
        for s in held:
            s.close()
    assert metric(mport, 'resolverguard_policy_errors_total{kind="too_many_connections"}') == 1.0
    with connect(port) as s:  # never a crash: still answering
        s.sendall(RCPT % b"user@army.ml")
        assert read_reply(s).startswith(b"action=550 ")
    assert guard.proc.poll() is None
