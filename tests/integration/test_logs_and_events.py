"""The daemon log (text or JSON, ISO 8601 with zone), warnings once, and every event kind as documented."""

from __future__ import annotations

import json
import re
import smtplib
import subprocess

from fakes import GUARD_CMD, ROOT, free_port
from polling import wait_until

ISO_WITH_ZONE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")


def documented_kinds() -> dict[str, set[str]]:
    """docs/observability.md: "### Event `kind`" headings, each followed by a | field | type | table."""
    kinds: dict[str, set[str]] = {}
    current = None
    for line in (ROOT / "docs" / "observability.md").read_text().splitlines():
        if m := re.match(r"### Event `(\w+)`", line):
            current = kinds.setdefault(m[1], set())
        elif line.startswith("#"):
            current = None
        elif current is not None and (m := re.match(r"\| `(\w+)` \|", line)):
            current.add(m[1])
    return kinds


def test_the_json_log_is_one_object_per_line_and_every_event_kind_matches_the_docs(tmp_path, upstream, start_guard):
    kinds = documented_kinds()
    assert {"block", "sink_rejection"} <= set(kinds), kinds
    sink = free_port()
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "a.protect").write_text("army.mil\n")
    config = tmp_path / "rg.toml"
    config.write_text(
        f'upstreams = ["{upstream.address}"]\n[typo]\naction = "sink"\n[smtp_sink]\nlisten = ["127.0.0.1:{sink}"]\n'
        '[log]\nformat = "json"\n'
    )
    guard = start_guard("-c", str(config), "--log-level", "info")
    guard.query("army.ml", "MX")
    with smtplib.SMTP("127.0.0.1", sink, timeout=10) as s:
        s.ehlo("mta.test")
        s.mail("alice@sender.test")
        assert s.rcpt("bob@army.ml")[0] == 550
    path = tmp_path / "events.jsonl"

    def emitted() -> list[dict]:
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    wait_until(lambda: len(emitted()) >= 2, "a block and a sink event", timeout=20)
    seen = set()
    for event in emitted():
        kind = event["event"]
        assert kind in kinds, f"event kind {kind!r} is not documented in docs/observability.md: {event}"
        assert set(event) | {"event"} == kinds[kind], (kind, sorted(set(event) ^ kinds[kind]))
        seen.add(kind)
    assert seen == {"block", "sink_rejection"}
    log = [x for x in guard.output().splitlines() if x.startswith("{")]
    assert any("started version=" in json.loads(x)["message"] for x in log), guard.output()
    for line in guard.output().splitlines():  # the process's stdout+stderr: the JSON log only (events go to a file)
        record = json.loads(line)
        assert set(record) >= {"ts", "level", "logger", "message"}, record
        assert ISO_WITH_ZONE.match(record["ts"]), record["ts"]


def test_the_text_log_shows_the_zone_and_log_level_is_any_case(tmp_path, upstream, start_guard):
    guard = start_guard("--upstream", upstream.address, "--log-level", "info", "--log-format", "TEXT")
    lines = [x for x in guard.output().splitlines() if " level=" in x]
    assert lines and all("level=INFO" in x or "level=WARNING" in x for x in lines), guard.output()
    for line in lines:
        assert ISO_WITH_ZONE.match(line.split(" ", 1)[0]), line


def test_lint_prints_each_warning_once(tmp_path):
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "a.protect").write_text("army.mil\nco.uk\n")
    done = subprocess.run([*GUARD_CMD, "lint", "--zones", "zones"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    warnings = [x for x in done.stdout.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1 and "co.uk" in warnings[0], done.stdout
    assert "co.uk" not in done.stderr, done.stderr  # not again as a log line


def test_a_bad_log_format_is_one_line(tmp_path):
    (tmp_path / "guard.toml").write_text('[log]\nformat = "xml"\n')
    done = subprocess.run(
        [*GUARD_CMD, "lint", "-c", str(tmp_path / "guard.toml")], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and f"{tmp_path / 'guard.toml'}:2: [log] format: 'xml' is not one of" in done.stderr
