"""Learning end to end: the running guard learns jfhq from an answered mail.jfhq.mil, blocks jfhq.ml,
keeps the label in its state directory across a restart, and `check` says the decision was learned."""

from __future__ import annotations

import json
import subprocess
import sys

import dns.rcode
from polling import wait_until


def _config(tmp_path, upstream) -> str:
    path = tmp_path / "guard.toml"
    path.write_text(
        f'state_dir = "{tmp_path / "state"}"\nprotect = ["mil"]\nupstreams = ["{upstream.address}"]\n', encoding="utf-8"
    )
    return str(path)


def test_guard_learns_mil_labels_from_answers(tmp_path, upstream, start_guard):
    upstream.on("mail.jfhq.mil", "A", "mail.jfhq.mil. 300 A 192.0.2.7")
    upstream.on("jfhq.ml", "A", "jfhq.ml. 300 A 192.0.2.66")
    config = _config(tmp_path, upstream)
    guard = start_guard("--config", config)
    assert guard.query("jfhq.ml", "A").rcode() == dns.rcode.NOERROR  # not known yet: forwarded
    assert guard.query("nosuch.mil", "A").rcode() == dns.rcode.NXDOMAIN  # NXDOMAIN teaches nothing
    assert guard.query("mail.jfhq.mil", "A").rcode() == dns.rcode.NOERROR
    state = tmp_path / "state" / "learned-labels.txt"
    wait_until(lambda: state.exists() and "mil jfhq" in state.read_text(), "the learned label on disk")
    assert "nosuch" not in state.read_text()
    assert guard.query("jfhq.ml", "A").rcode() == dns.rcode.NXDOMAIN  # blocked from now on, not remembered
    assert guard.query("mail.jfhq.ml", "A").rcode() == dns.rcode.NXDOMAIN
    assert upstream.count("jfhq.ml") == 1 and upstream.count("mail.jfhq.ml") == 0
    guard.stop()

    again = start_guard("--config", config)  # reloaded at start
    assert again.query("jfhq.ml", "A").rcode() == dns.rcode.NXDOMAIN
    out = subprocess.run(
        [sys.executable, "-m", "resolverguard", "check", "--config", config, "--json", "jfhq.ml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    result = json.loads(out.stdout)
    assert out.returncode == 1 and result["learned"] is True and result["protected"] == "jfhq.mil", out.stderr
    text = subprocess.run(
        [sys.executable, "-m", "resolverguard", "check", "--config", config, "jfhq.ml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert "learned from upstream answers" in text.stdout
