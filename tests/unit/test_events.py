"""The event log: one JSON line per event, written in batches; drops counted; a rotated file is followed."""

from __future__ import annotations

import json
import os
import socket

import pytest
from prometheus_client import CollectorRegistry

from resolverguard import events, wire
from resolverguard.codes import Action, Verdict
from resolverguard.metrics import Metrics
from resolverguard.policy import Decision
from resolverguard.rpz import RpzHit
from resolverguard.typo import TypoMatch
from tests.polling import wait_until

TYPO = Decision(
    Action.NXDOMAIN,
    Verdict.BLOCKED_TYPO,
    typo=TypoMatch("army.ml", "army.ml", "army.mil", "tld_typo", 1, "block"),
)


def _query(name: str, qtype: int = 15, client: str = "10.1.2.25", tcp: bool = False) -> wire.Query:
    import dns.message

    return wire.parse_query(dns.message.make_query(name, qtype).to_wire(), client, tcp)


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def log(tmp_path):
    metrics = Metrics(CollectorRegistry())
    path = tmp_path / "events.jsonl"
    events.setup_events(str(path), metrics)
    yield path, metrics
    events.stop_events()


def test_a_block_is_one_line_with_every_field_and_its_kind(log):
    path, _ = log
    q = _query("Army.ML")
    assert events.emit_block(q, TYPO)
    wait_until(lambda: len(_lines(path)) == 1, what="the event line")
    (event,) = _lines(path)
    assert event == {
        "time": event["time"],
        "event": "block",
        "client": "10.1.2.25",
        "qname": "army.ml",
        "qtype": "MX",
        "transport": "udp",
        "action": "nxdomain",
        "outcome": "blocked_typo",
        "protected": "army.mil",
        "class": "tld_typo",
        "distance": 1,
        "neighbour": "army.ml",
        "rule": "typo-detector",
    }
    assert event["time"].endswith("Z") and len(event["time"]) == len("2026-01-05T09:14:03.512Z")


def test_override_and_log_only_events_name_their_rule_and_action(log):
    path, _ = log
    override = Decision(
        Action.NODATA, Verdict.BLOCKED_OVERRIDE, rpz=RpzHit("10-overrides", None, "phish.example", Action.NODATA)
    )
    logged = Decision(Action.FORWARD, Verdict.LOGGED_TYPO, typo=TYPO.typo)
    events.emit_block(_query("phish.example", 1, tcp=True), override)
    events.emit_block(_query("army.ml", 1), logged)
    wait_until(lambda: len(_lines(path)) == 2, what="two event lines")
    first, second = _lines(path)
    assert (first["rule"], first["action"], first["transport"], first["protected"]) == (
        "10-overrides:phish.example",
        "nodata",
        "tcp",
        None,
    )
    assert (second["action"], second["outcome"]) == ("log-only", "logged_typo")


def test_handed_back_blocks_each_get_a_line_whatever_the_client_form(log):
    path, _ = log
    tail = events.block_tail(_query("army.ml"), TYPO)
    pairs = [(tail, socket.inet_aton("192.0.2.7")), (tail, socket.inet_pton(socket.AF_INET6, "2001:db8::1"))]
    pairs += [(tail, "198.51.100.9")] * 3
    events.emit_blocks(pairs, now=1767604443.512)
    wait_until(lambda: len(_lines(path)) == 5, what="five event lines")
    got = _lines(path)
    assert [e["client"] for e in got] == ["192.0.2.7", "2001:db8::1"] + ["198.51.100.9"] * 3
    assert {e["time"] for e in got} == {"2026-01-05T09:14:03.512Z"}
    assert {e["qname"] for e in got} == {"army.ml"}


def test_other_event_kinds_are_written_as_given(log):
    path, _ = log
    events.emit_event({"time": events.timestamp(), "event": "sink_rejection", "recipient": "user@army.ml"})
    wait_until(lambda: len(_lines(path)) == 1, what="the event line")
    assert _lines(path)[0]["event"] == "sink_rejection"


def test_a_full_buffer_drops_and_counts_instead_of_waiting(log, monkeypatch):
    path, metrics = log
    monkeypatch.setattr(events, "MAX_PENDING", 3)
    writer = events._log
    writer.taken -= 10  # as if the writer were 10 events behind: nothing more fits
    tail = events.block_tail(_query("army.ml"), TYPO)
    events.emit_blocks([(tail, "192.0.2.1")] * 2)
    events.emit_event({"event": "sink_rejection"})
    writer.taken += 10
    full = metrics.events_dropped.labels("full")
    assert metrics.counts[full.slot] == 3 and writer.dropped == 3
    events.emit_blocks([(tail, "192.0.2.2")])  # room again
    wait_until(lambda: len(_lines(path)) == 1, what="the one event that fitted")
    assert _lines(path)[0]["client"] == "192.0.2.2"


def test_failed_writes_are_counted(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    metrics = Metrics(CollectorRegistry())
    events.setup_events("/dev/full", metrics)
    try:
        tail = events.block_tail(_query("army.ml"), TYPO)
        events.emit_blocks([(tail, "192.0.2.1")] * 4)
        failed = metrics.events_dropped.labels("write_error")
        wait_until(lambda: metrics.counts[failed.slot] == 4, what="four lost events counted")
    finally:
        events.stop_events()


def test_a_rotated_file_is_followed_within_a_second_and_at_once_on_reopen(log, tmp_path):
    path, _ = log
    tail = events.block_tail(_query("army.ml"), TYPO)
    events.emit_blocks([(tail, "192.0.2.1")])
    wait_until(lambda: len(_lines(path)) == 1, what="the first line")
    path.rename(tmp_path / "events.jsonl.1")  # logrotate without copytruncate
    wait_until(path.exists, what="a new file after the rename")
    events.emit_blocks([(tail, "192.0.2.2")])
    wait_until(lambda: len(_lines(path)) == 1, what="the next line in the new file")
    assert [e["client"] for e in _lines(tmp_path / "events.jsonl.1")] == ["192.0.2.1"]
    path.unlink()
    events.reopen_events()  # SIGHUP
    wait_until(path.exists, what="a new file after SIGHUP")


def test_stop_writes_everything_buffered(tmp_path):
    path = tmp_path / "events.jsonl"
    events.setup_events(str(path))
    tail = events.block_tail(_query("army.ml"), TYPO)
    for i in range(1000):
        events.emit_blocks([(tail, f"192.0.2.{i % 250}")])
    events.stop_events()
    assert len(_lines(path)) == 1000
    assert not events.enabled() and not events.emit_block(_query("army.ml"), TYPO)


def test_lines_to_a_pipe_are_written_whole_in_chunks_of_at_most_pipe_buf(monkeypatch):
    read, write = os.pipe()
    writes: list[int] = []
    real = os.write

    def counting(fd, data):
        if fd == write:
            writes.append(len(data))
        return real(fd, data)

    monkeypatch.setattr(events.os, "write", counting)
    log = events.EventLog.__new__(events.EventLog)
    log.fd, log.pipe, log.write_counts, log.write_errors = write, True, None, 0
    lines = b"".join(b'{"n":%d,"pad":"%s"}\n' % (i, b"x" * (i % 300)) for i in range(200))
    log._write(lines, 200)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        assert f.read() == lines
    assert len(writes) > 1 and max(writes) <= events.PIPE_CHUNK
