"""`resolverguard exceptions add|list|remove`, `check` and `lint` as an operator runs them (a process each)."""

from __future__ import annotations

import json
import subprocess

import pytest
from fakes import GUARD_CMD


def run(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([*GUARD_CMD, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def zones(tmp_path):
    z = tmp_path / "zones"
    z.mkdir()
    (z / "p.protect").write_text("army.mil\n")
    return z


def test_add_list_check_remove_keep_comments(zones, tmp_path):
    z = ["--zones", str(zones)]
    done = run(
        "exceptions",
        "add",
        "army.ml",
        "--owner",
        "j.smith",
        "--reason",
        "Mali MoD",
        "--until",
        "2099-12-31",
        *z,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    path = zones / "exceptions.toml"
    path.write_text(path.read_text().replace('name = "army.ml"', 'name = "army.ml"  # ticket 4711'))
    done = run("exceptions", "add", "amry.mil", "--owner", "it", "--reason", "r", "--until", "2099-01-01T10:00Z",
               "--sender", "alice@example.org", *z, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "# ticket 4711" in path.read_text()  # comments survive an edit
    assert not list(zones.glob(".*tmp*"))  # written atomically, nothing left behind

    check = run("check", "mail.army.ml", *z, cwd=tmp_path)
    assert check.returncode == 0
    assert check.stdout.strip() == "mail.army.ml: allowed (exception by j.smith until 2099-12-31T23:59:59Z: Mali MoD)"
    assert run("check", "amry.mil", *z, cwd=tmp_path).returncode == 1  # sender-only: DNS still blocks

    listed = json.loads(run("exceptions", "list", "--json", *z, cwd=tmp_path).stdout)
    assert [(e["name"], e["expired"], e["senders"]) for e in listed] == [
        ("army.ml", False, []),
        ("amry.mil", False, ["alice@example.org"]),
    ]
    export = run("export-rpz", *z, cwd=tmp_path).stdout
    assert "army.ml 300 CNAME rpz-passthru." in export and "amry.mil 300 CNAME rpz-passthru." not in export

    assert run("exceptions", "remove", "army.ml", *z, cwd=tmp_path).returncode == 0
    assert run("check", "army.ml", *z, cwd=tmp_path).returncode == 1


@pytest.mark.parametrize(
    "args, words",
    [
        (["army.ml", "--reason", "r", "--until", "2099-01-01"], "--owner is required"),
        (["army.ml", "--owner", "o", "--until", "2099-01-01"], "--reason is required"),
        (["army.ml", "--owner", "o", "--reason", "r"], "--until is required"),
        (["army.ml", "--owner", "o", "--reason", "r", "--until", "2001-01-01"], "in the past"),
        (["army.ml", "--owner", "o", "--reason", "r", "--until", "someday"], "ISO 8601"),
        (["ml", "--owner", "o", "--reason", "r", "--until", "2099-01-01"], "public suffix"),
        (["not a name", "--owner", "o", "--reason", "r", "--until", "2099-01-01"], "bad name"),
    ],
)
def test_bad_additions_are_one_line_and_exit_2(zones, tmp_path, args, words):
    done = run("exceptions", "add", *args, "--zones", str(zones), cwd=tmp_path)
    assert done.returncode == 2 and words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (zones / "exceptions.toml").exists()


def test_lint_names_file_and_line_and_warns_of_expired_entries(zones, tmp_path):
    path = zones / "exceptions.toml"
    path.write_text('# x\n[[exception]]\nname = "army.ml"\nowner = "o"\nreason = "r"\nuntil = 2001-01-01\n')
    done = run("lint", "--zones", str(zones), cwd=tmp_path)
    assert done.returncode == 0 and f"warning: {path}:2: exception army.ml expired 2001-01-01T23:59:59Z" in done.stdout
    assert json.loads(run("exceptions", "list", "--json", "--zones", str(zones), cwd=tmp_path).stdout)[0]["expired"]
    path.write_text(path.read_text() + "color = 1\n")
    done = run("lint", "--zones", str(zones), cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == f"resolverguard: error: {path}:7: unknown key 'color' " + (
        "(known: name, owner, reason, until, senders)"
    )
