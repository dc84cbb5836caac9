"""`lint` checks everything `serve` checks: each problem is `file:line: [section] key: problem`, exit 2 from all."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from fakes import GUARD_CMD, free_port

SECRET = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0\n"  # base64


def tree(tmp_path: Path, guard_toml: str, secret: str | None = SECRET, mode: int = 0o600) -> Path:
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "a.protect").write_text("army.mil\n")
    if secret is not None:
        key = tmp_path / "key"
        key.write_text(secret)
        key.chmod(mode)
    path = tmp_path / "guard.toml"
    path.write_text(guard_toml.format(key=tmp_path / "key", port=free_port()))
    return path


EXPORT = 'listen = ["127.0.0.1:{port}"]\nupstreams = ["127.0.0.1:9"]\n\n[export]\nclients = ["127.0.0.1/32"]\n'
CASES = [
    # (guard.toml, secret text or None for no file, mode, line, key as written, problem)
    (EXPORT + 'tsig = {{ name = "k.", secret_file = "{key}" }}\n', None, 0o600, 6, "[export] tsig", "cannot read"),
    (EXPORT + 'tsig = {{ name = "k.", secret_file = "{key}" }}\n', SECRET, 0o644, 6, "[export] tsig", "chmod 600"),
    (
        EXPORT + 'tsig = {{ name = "k.", secret_file = "{key}" }}\n',
        "not base64!\n",
        0o600,
        6,
        "[export] tsig",
        "base64",
    ),
    (
        EXPORT + 'tsig = {{ name = "k.", algorithm = "md5", secret_file = "{key}" }}\n',
        SECRET,
        0o600,
        6,
        "[export] tsig",
        "algorithm 'md5' is not one of hmac-sha256",
    ),
    ('listen = ["127.0.0.1:{port}"]\nupstreams = ["127.0.0.1:0"]\n', None, 0o600, 2, "upstreams", "port 0"),
    (EXPORT + 'notify = ["127.0.0.1:0"]\n', None, 0o600, 6, "[export] notify", "port 0"),
    (
        'listen = ["127.0.0.1:5399"]\nupstreams = ["127.0.0.1:5399"]\n',
        None,
        0o600,
        2,
        "upstreams",
        "upstream 127.0.0.1:5399 would conflict with this guard's own listen address",
    ),
]


@pytest.mark.parametrize("command", ["lint", "check", "serve"])
@pytest.mark.parametrize("toml, secret, mode, line, key, problem", CASES)
def test_each_problem_is_one_line_and_exit_2_from_lint_check_and_serve(
    tmp_path, command, toml, secret, mode, line, key, problem
):
    if mode & 0o077 and os.geteuid() == 0 and secret is None:
        pytest.skip("no file")
    path = tree(tmp_path, toml, secret, mode)
    extra = ["army.ml"] if command == "check" else []
    done = subprocess.run(
        [*GUARD_CMD, command, "--config", str(path), *extra], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    errors = [x for x in done.stderr.splitlines() if not re.match(r"\d{4}-\d\d-\d\d[T ].* level=(INFO|WARNING) ", x)]
    assert len(errors) == 1, done.stderr
    where = f"resolverguard: error: {path}:{line}: {key}: "
    assert where in errors[0] and problem in errors[0], errors[0]
    assert "Traceback" not in done.stderr


def test_a_good_tsig_key_passes_lint(tmp_path):
    path = tree(tmp_path, EXPORT + 'tsig = {{ name = "k.", algorithm = "hmac-sha512", secret_file = "{key}" }}\n')
    done = subprocess.run([*GUARD_CMD, "lint", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
