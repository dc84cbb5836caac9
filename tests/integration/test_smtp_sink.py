"""The SMTP sink over real sockets: refusals with a suggestion, defer mode, limits, events, metrics, reload."""

from __future__ import annotations

import json
import signal
import smtplib
import socket
import subprocess
import urllib.request
from pathlib import Path

import dns.rdatatype
import pytest
from fakes import GUARD_CMD, free_port
from mailnet import poll

SUGGESTION = "Did you mean <user@army.mil>?"


def sink_config(tmp_path, port: int, upstream, **smtp_sink) -> str:
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in smtp_sink.items())
    path = tmp_path / "rg.toml"
    path.write_text(f"""
upstreams = ["{upstream.address}"]
[typo]
action = "sink"
[smtp_sink]
listen = ["127.0.0.1:{port}"]
{lines}""")
    return str(path)


@pytest.fixture
def sink(tmp_path, upstream, start_guard):
    """start(protect=..., **smtp_sink keys) -> (guard, port)."""

    def start(*protect: str, **keys):
        port = free_port()
        metrics = free_port()
        (tmp_path / "zones").mkdir(exist_ok=True)
        (tmp_path / "zones" / "test.protect").write_text("\n".join(protect or ("army.mil",)) + "\n")
        guard = start_guard("-c", sink_config(tmp_path, port, upstream, **keys), "--metrics", f"127.0.0.1:{metrics}")
        guard.sink_port, guard.metrics_port = port, metrics
        return guard

    return start


def client(guard) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", guard.sink_port, timeout=10)
    s.ehlo("mta.test")
    s.mail("alice@sender.test")
    return s


def events(tmp_path) -> list[dict]:
    path = tmp_path / "events.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e.get("event") == "sink_rejection"]


def test_typo_recipient_is_refused_with_the_suggestion_and_logged(sink, tmp_path):
    guard = sink()
    s = client(guard)
    code, text = s.rcpt("user@army.ml")
    assert code == 550
    assert text.decode() == (
        f"5.1.2 <user@army.ml>: army.ml resembles the protected domain army.mil (tld_typo). {SUGGESTION} Not delivered."
    )
    code, text = s.rcpt("bob@mail.army.ml")
    assert (code, b"Did you mean <bob@mail.army.mil>?" in text) == (550, True)
    code, text = s.rcpt("carol@example.com")  # not a neighbour: no suggestion, and no relay
    assert code == 550 and text.startswith(b"5.1.1") and b"Did you mean" not in text
    assert s.docmd("DATA")[0] == 554  # never reads content
    assert s.docmd("VRFY", "root")[0] == 502
    assert s.docmd("EXPN", "staff")[0] == 502
    s.quit()
    found = poll(lambda: len(events(tmp_path)) >= 3 and events(tmp_path), "three sink events")
    first = found[0]
    assert {k: first[k] for k in ("mta", "sender", "recipient", "protected", "class", "suggestion", "mode")} == {
        "mta": "127.0.0.1",
        "sender": "alice@sender.test",
        "recipient": "user@army.ml",
        "protected": "army.mil",
        "class": "tld_typo",
        "suggestion": "user@army.mil",
        "mode": "reject",
    }
    assert first["time"].endswith("Z")
    text = urllib.request.urlopen(f"http://127.0.0.1:{guard.metrics_port}/metrics", timeout=5).read().decode()
    assert (
        'resolverguard_sink_rejections_total{mode="reject",protected_domain="army.mil",typo_class="tld_typo"} 2.0'
        in text
    )
    assert 'resolverguard_sink_rejections_total{mode="reject",protected_domain="none",typo_class="none"} 1.0' in text
    assert (
        'resolverguard_sink_rejections_total{mode="reject",protected_domain="army.mil",typo_class="omission"} 0.0'
        in text
    )


def test_whole_tld_entry_suggests_the_label_under_the_protected_tld(sink):
    guard = sink("mil")
    s = client(guard)
    code, text = s.rcpt("user@army.ml")
    assert code == 550 and SUGGESTION.encode() in text and b"protected domain army.mil" in text
    s.quit()


def test_defer_mode_answers_4xx_with_the_same_text(sink):
    guard = sink(mode="defer")
    s = client(guard)
    code, text = s.rcpt("user@army.ml")
    assert code == 450 and text.startswith(b"4.1.2") and SUGGESTION.encode() in text
    s.quit()


def test_template_is_configurable(sink):
    guard = sink(template="{recipient} is a typo of {protected}; try {suggestion}")
    s = client(guard)
    assert s.rcpt("user@army.ml") == (550, b"5.1.2 user@army.ml is a typo of army.mil; try user@army.mil")
    s.quit()


def test_dns_points_the_typo_at_the_sink_and_answers_for_the_sink_host(sink):
    guard = sink()
    mx = guard.query("army.ml", "MX")
    assert [r.to_text() for r in mx.answer[0]] == ["10 sink.resolverguard.internal."]
    a = guard.query("sink.resolverguard.internal", "A")  # MTAs look the MX host up on their own
    assert a.rcode() == 0 and a.answer[0].rdtype == dns.rdatatype.A and a.answer[0][0].to_text() == "127.0.0.2"
    aaaa = guard.query("sink.resolverguard.internal", "AAAA")  # no IPv6 sink configured: NODATA
    assert aaaa.rcode() == 0 and not aaaa.answer
    assert guard.query("army.ml", "A").answer[0][0].to_text() == "127.0.0.2"


def test_sessions_are_bounded_and_the_extra_one_gets_421(sink):
    guard = sink(max_sessions=2)
    held = [client(guard), client(guard)]
    with socket.create_connection(("127.0.0.1", guard.sink_port), timeout=10) as extra:
        greeting = extra.recv(200)
    assert greeting.startswith(b"421 4.3.2")
    for s in held:
        s.quit()
    third = poll(lambda: _greeting(guard).startswith(b"220") and True, "a free session after two quit")
    assert third


def _greeting(guard) -> bytes:
    with socket.create_connection(("127.0.0.1", guard.sink_port), timeout=10) as conn:
        return conn.recv(200)


def test_idle_session_is_closed_by_the_command_timeout(sink):
    guard = sink(command_timeout=0.5)
    with socket.create_connection(("127.0.0.1", guard.sink_port), timeout=20) as conn:
        assert conn.recv(200).startswith(b"220")
        assert conn.recv(200) == b""  # the server closed it; the socket timeout is only a backstop


def test_long_lines_and_repeated_commands_are_limited(sink):
    guard = sink(max_commands=3)
    s = client(guard)
    assert s.docmd("NOOP", "x" * 5000)[0] == 500  # longer than a command line may be: read and discarded
    for _ in range(3):
        s.rcpt("user@army.ml")
    code, _ = s.docmd("RCPT", "TO:<user@army.ml>")
    assert code == 421  # the per-command limit ends the session
    s.close()


def test_sink_follows_a_policy_reload(sink, tmp_path):
    guard = sink()
    s = client(guard)
    assert b"Did you mean" not in s.rcpt("me@gmial.com")[1]
    s.quit()
    (tmp_path / "zones" / "test.protect").write_text("army.mil\ngmail.com\n")
    guard.proc.send_signal(signal.SIGHUP)  # the file watcher may not be watching yet
    poll(lambda: "generation=1" in guard.output(), "the reload")
    s = client(guard)
    assert b"Did you mean <me@gmail.com>?" in s.rcpt("me@gmial.com")[1]
    s.quit()


@pytest.mark.parametrize(
    "body, message",
    [
        ('mode = "bounce"', "'bounce' is not one of reject, defer"),
        ('template = "Did you mean {nope}?"', "unknown field {nope}"),
        ("max_sessions = 0", "bad.toml:3: [smtp_sink] max_sessions: must be >= 1, got 0"),
    ],
)
def test_bad_sink_config_is_one_line_and_exit_2(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(f'[smtp_sink]\nlisten = ["127.0.0.1:0"]\n{body}\n')
    done = subprocess.run(
        [*GUARD_CMD, "serve", "-c", str(path), "-u", "127.0.0.1:9"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_an_idn_look_alike_recipient_gets_its_suggestion_over_smtputf8(sink, tmp_path):
    guard = sink("gmail.com")
    s = smtplib.SMTP("127.0.0.1", guard.sink_port, timeout=10)
    s.ehlo("mta.test")
    assert s.has_extn("smtputf8")
    s.command_encoding = "utf-8"
    s.mail("alice@sender.test", ["SMTPUTF8"])
    code, text = s.rcpt("me@gma\u0456l.com")  # a Cyrillic i
    assert code == 550 and b"Did you mean <me@gmail.com>?" in text, text
    s.quit()
    found = poll(lambda: events(tmp_path) or None, "the sink event")
    assert found[0]["recipient"] == "me@gma\u0456l.com" and found[0]["suggestion"] == "me@gmail.com"


def test_a_flood_of_refusals_is_folded_into_counted_lines(sink, tmp_path):
    guard = sink()
    s = client(guard)
    refusals = 95  # well over the per-MTA burst (20) and what 10 lines a second add while they are sent
    for _ in range(refusals):
        s.rcpt("user@army.ml")
    s.quit()

    def accounted() -> tuple | None:
        lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
        single = sum(e["event"] == "sink_rejection" for e in lines)
        folded = sum(e["count"] for e in lines if e["event"] == "sink_folded")
        return (single, folded) if single + folded == refusals else None

    single, folded = poll(accounted, "every refusal in a line or a folded count")
    assert folded > 0 and single < refusals
    text = urllib.request.urlopen(f"http://127.0.0.1:{guard.metrics_port}/metrics", timeout=5).read().decode()
    assert f"resolverguard_sink_events_folded_total {float(folded)}" in text


def _children(pid: int) -> set[int]:
    found = set()
    for task in (Path(f"/proc/{pid}/task")).iterdir():
        found |= {int(x) for x in (task / "children").read_text().split()}
    return found


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one", "workers"])
def test_the_sink_runs_in_a_process_of_its_own_and_counts_into_the_one_metrics_set(
    tmp_path, upstream, start_guard, workers
):
    port, metrics = free_port(), free_port()
    (tmp_path / "zones").mkdir(exist_ok=True)
    (tmp_path / "zones" / "test.protect").write_text("army.mil\n")
    guard = start_guard("-c", sink_config(tmp_path, port, upstream), "--metrics", f"127.0.0.1:{metrics}", *workers)
    guard.sink_port = port
    dns_processes = _children(guard.proc.pid) if workers else {guard.proc.pid}
    sink_processes = set().union(*(_children(p) for p in dns_processes))
    assert sink_processes and not sink_processes & dns_processes  # a forked child per DNS process
    for _ in range(3):
        s = client(guard)
        assert s.rcpt("user@army.ml")[0] == 550
        s.quit()
    series = 'resolverguard_sink_rejections_total{mode="reject",protected_domain="army.mil",typo_class="tld_typo"}'

    def counted() -> bool:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5).read().decode()
        return f"{series} 3.0" in text and "resolverguard_queries_total" in text

    poll(counted, "three refusals on the one /metrics")
    poll(lambda: len(events(tmp_path)) == 3, "an event line per refusal")
