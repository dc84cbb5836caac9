"""Operations: the shipped unit starts as written, bad set-ups fail closed and loud, events survive logrotate."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fakes import GUARD_CMD, ROOT, free_port, stop_process
from realprog import require_program

UNIT = ROOT / "docs" / "resolverguard.service"


def unit_exec_start() -> list[str]:
    """The ExecStart= command line of the shipped unit, split as systemd splits it (shell-like quoting)."""
    line = next(x for x in UNIT.read_text().splitlines() if x.startswith("ExecStart="))
    return shlex.split(line.partition("=")[2])


def etc_tree(top: Path, guard_toml: str) -> Path:
    """A copy of the README's /etc/resolverguard: guard.toml and the shipped zones."""
    etc = top / "etc"
    shutil.copytree(ROOT / "zones", etc / "zones")
    (etc / "guard.toml").write_text(guard_toml)
    return etc


def mapped_exec_start(top: Path, port: int) -> list[str]:
    """The unit's exact arguments, with /etc/resolverguard, /var/log/resolverguard and port 53 moved into top."""
    argv = unit_exec_start()
    assert argv[0] == "/opt/resolverguard/bin/resolverguard", argv
    out = []
    for arg in argv[1:]:
        arg = arg.replace("/etc/resolverguard", str(top / "etc")).replace("/var/log/resolverguard", str(top / "log"))
        out.append(re.sub(r":53$", f":{port}", arg))
    return [*GUARD_CMD, *out]


class Process:
    """A command whose output is collected by a thread; stopped by PID."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in list(self.lines)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.reader.join(2)
                raise AssertionError(f"no {text!r} in the output:\n" + "".join(self.lines))
            time.sleep(0.05)

    def stop(self) -> int:
        code = stop_process(self.proc)
        self.reader.join(2)
        return code


QUERY_BOTH = """
import json, sys, dns.message, dns.query, dns.rcode
port = int(sys.argv[1])
out = {}
for host in ("127.0.0.1", "::1"):
    for fn in (dns.query.udp, dns.query.tcp):
        r = fn(dns.message.make_query("army.ml", "MX", use_edns=0), host, port=port, timeout=5)
        out[f"{host} {fn.__name__}"] = dns.rcode.to_text(r.rcode())
print(json.dumps(out))
"""


def test_the_units_exact_exec_start_serves_ipv4_and_ipv6_on_one_port(tmp_path):
    """0.0.0.0:PORT and [::]:PORT together (IPV6_V6ONLY), in a network namespace of the test's own."""
    unshare, nsenter = require_program("unshare"), require_program("nsenter")
    if os.geteuid() != 0:
        pytest.skip("a network namespace needs root")
    etc_tree(tmp_path, 'upstreams = ["127.0.0.1:9"]\n')
    (tmp_path / "log").mkdir()
    port = 5353
    argv = mapped_exec_start(tmp_path, port)
    assert f"0.0.0.0:{port}" in argv and f"[::]:{port}" in argv, argv
    script = 'ip link set lo up && exec "$@"'
    guard = Process([unshare, "--net", "sh", "-c", script, "sh", *argv], cwd=tmp_path)
    try:
        guard.wait_for("started version")
        assert "listening address=0.0.0.0" in guard_output(guard) and "listening address=::" in guard_output(guard)
        done = subprocess.run(
            [nsenter, f"--net=/proc/{guard.proc.pid}/ns/net", sys.executable, "-c", QUERY_BOTH, str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert set(json.loads(done.stdout).values()) == {"NXDOMAIN"}, done.stdout
        events = tmp_path / "log" / "blocks.jsonl"  # the unit's --events, under its LogsDirectory=
        deadline = time.monotonic() + 10
        while len(event_lines(events)) < 4:  # one JSON line per block, written by a thread
            assert time.monotonic() < deadline, guard_output(guard)
            time.sleep(0.05)
        assert {(e["qname"], e["protected"], e["class"]) for e in event_lines(events)} == {
            ("army.ml", "army.mil", "tld_typo")
        }
    finally:
        assert guard.stop() == 0, guard_output(guard)


def event_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_unit_logs_events_under_its_logs_directory_and_documents_flags():
    text = UNIT.read_text()
    logs = re.search(r"^LogsDirectory=(\S+)$", text, re.M)
    assert logs, "no LogsDirectory="
    argv = unit_exec_start()
    events = argv[argv.index("--events") + 1]
    assert events.startswith(f"/var/log/{logs[1]}/") and events.endswith(".jsonl"), events
    assert "--zones" not in argv  # zones/ next to the config file: one place to look
    assert "flags win over" in text


def guard_output(p: Process) -> str:
    return "".join(p.lines)


# ---------------------------------------------------------------- 2. a guard that protects nothing does not start


def run(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*GUARD_CMD, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def one_line_exit_2(done: subprocess.CompletedProcess, *expected: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    errors = [line for line in done.stderr.splitlines() if not re.match(r"\d{4}-\d\d-\d\dT.* level=INFO ", line)]
    assert len(errors) == 1 and errors[0].startswith("resolverguard: error: "), done.stderr  # start-up INFO aside
    for text in expected:
        assert text in errors[0], done.stderr


def test_serve_without_protected_domains_exits_2_unless_allowed_empty(tmp_path):
    (tmp_path / "zones").mkdir()
    serve = ("serve", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--events", "")
    one_line_exit_2(run(*serve, "--zones", "zones", cwd=tmp_path), "nothing to protect", "--allow-empty")
    one_line_exit_2(run(*serve, "--zones", "missing", cwd=tmp_path), "zones_dir missing: no such directory")
    one_line_exit_2(run("check", "army.ml", cwd=tmp_path / "zones"), "zones_dir zones: no such directory")
    one_line_exit_2(run("lint", "--zones", "zones", cwd=tmp_path), "nothing to protect")
    guard = Process([*GUARD_CMD, *serve, "--zones", "zones", "--allow-empty"], cwd=tmp_path)
    try:
        guard.wait_for("started version")
    finally:
        assert guard.stop() == 0


def test_zones_dir_is_relative_to_the_config_file(tmp_path):
    etc = etc_tree(tmp_path, 'upstreams = ["127.0.0.1:9"]\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lint = run("lint", "--config", str(etc / "guard.toml"), cwd=elsewhere)
    assert lint.returncode == 0, lint.stderr
    assert re.search(r"ok: .* [1-9]\d* protected domains", lint.stdout), lint.stdout
    check = run("check", "--config", str(etc / "guard.toml"), "army.ml", cwd=elsewhere)
    assert check.returncode == 1 and "blocked" in check.stdout, check.stdout + check.stderr
    (etc / "guard.toml").write_text('zones_dir = "policy"\n')
    one_line_exit_2(run("lint", "--config", str(etc / "guard.toml"), cwd=elsewhere), f"zones_dir {etc / 'policy'}")


def test_default_config_path_is_read_when_present(tmp_path, monkeypatch, capsys):
    from resolverguard import cli

    monkeypatch.delenv(cli.CONFIG_ENV, raising=False)  # this test is about the default path: not hermetic's switch
    etc = etc_tree(tmp_path, 'protect = ["example-protected.org"]\n')
    monkeypatch.setattr(cli, "DEFAULT_CONFIG", str(etc / "guard.toml"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["check", "exmaple-protected.org"]) == 1  # protected by the default file only
    assert "blocked" in capsys.readouterr().out
    monkeypatch.setattr(cli, "DEFAULT_CONFIG", str(tmp_path / "absent.toml"))
    assert cli.main(["check", "--zones", str(etc / "zones"), "exmaple-protected.org"]) == 0


# ---------------------------------------------------------------- 4. every user error: one line, exit 2


def zones_with(tmp_path: Path, protect: str = "army.mil\n") -> Path:
    zones = tmp_path / "zones"
    zones.mkdir(exist_ok=True)
    (zones / "a.protect").write_text(protect)
    return zones


@pytest.mark.parametrize("name", ["http://gmail.com/", "a b", ".", "gmail.com/x", "user@gmail.com"])
def test_check_refuses_what_is_not_a_domain_name(tmp_path, name):
    zones_with(tmp_path)
    one_line_exit_2(run("check", "--zones", "zones", "--", name, cwd=tmp_path), "not a domain name")


def test_lint_and_export_errors_exit_2(tmp_path):
    zones = zones_with(tmp_path)
    (zones / "10-bad.rpz").write_text("$TTL 300\n@ SOA ns. host. 1 3600 600 86400 60\n@ NS ns.\nx CNAME\n")
    one_line_exit_2(run("lint", "--zones", "zones", cwd=tmp_path), "10-bad.rpz:4")
    (zones / "10-bad.rpz").unlink()
    one_line_exit_2(
        run("export-rpz", "--zones", "zones", "-o", "/nonexistent/dir/x.rpz", cwd=tmp_path),
        "cannot write /nonexistent/dir/x.rpz.tmp: No such file or directory",
    )


def test_a_closed_pipe_is_no_traceback(tmp_path):
    """`neighbours --json | head`: a reader that has gone. Its end of the pipe is closed before we write."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [*GUARD_CMD, "neighbours", "--json", "gmail.com"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    finally:
        os.close(write_end)
    assert done.stderr == "" and done.returncode == 128 + signal.SIGPIPE, done.stderr


def test_start_up_errors_say_which_listener_and_why(tmp_path):
    import socket

    zones_with(tmp_path)
    serve = ("serve", "--zones", "zones", "--upstream", "127.0.0.1:9", "--events", "")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        one_line_exit_2(
            run(*serve, "--listen", f"127.0.0.1:{port}", cwd=tmp_path),
            f"cannot listen for DNS on 127.0.0.1:{port} (UDP and TCP): port in use",
        )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for workers in ("1", "2"):
            done = run(
                *serve, "--listen", "127.0.0.1:0", "--metrics", f"127.0.0.1:{port}", "--workers", workers, cwd=tmp_path
            )
            one_line_exit_2(done, f"cannot listen for /metrics on 127.0.0.1:{port}: port in use (another web server")
            assert "DNS server" not in done.stderr
    one_line_exit_2(
        run(
            "serve",
            "--zones",
            "zones",
            "--upstream",
            "127.0.0.1:9",
            "--listen",
            "127.0.0.1:0",
            "--events",
            str(tmp_path / "no" / "events.jsonl"),
            cwd=tmp_path,
        ),
        "cannot open the events file",
        "No such file or directory",
    )
    one_line_exit_2(run(*serve, "--listen", "::1:53", cwd=tmp_path), "ambiguous address '::1:53': write [::1]:53")


# ---------------------------------------------------------------- 5. an upstream that is the guard itself


@pytest.mark.parametrize(
    "listen, upstream",
    [
        ("127.0.0.1:{p}", "127.0.0.1:{p}"),
        ("0.0.0.0:{p}", "127.0.0.1:{p}"),
        ("[::]:{p}", "[::1]:{p}"),
        ("[::1]:{p}", "[::1]:{p}"),
    ],
)
def test_an_upstream_that_is_our_own_listen_address_is_refused(tmp_path, listen, upstream):
    zones_with(tmp_path)
    port = free_port()
    done = run(
        "serve",
        "--zones",
        "zones",
        "--events",
        "",
        "--listen",
        listen.format(p=port),
        "--upstream",
        upstream.format(p=port),
        cwd=tmp_path,
    )
    one_line_exit_2(
        done,
        f"upstream {upstream.format(p=port)} would conflict with this guard's own listen address",
        "forwarding loop",
    )


def test_other_upstreams_are_no_loop():
    from resolverguard.cli import refuse_forwarding_loop
    from resolverguard.config import parse_endpoint as ep

    refuse_forwarding_loop([ep("0.0.0.0:53"), ep("[::]:53")], [ep("192.0.2.53:53"), ep("127.0.0.1:5353")])
    refuse_forwarding_loop([ep("127.0.0.1:53")], [ep("127.0.0.2:53"), ep("[::1]:53")])


# ---------------------------------------------------------------- 8. flags that replace file keys; logrotate


def test_a_flag_that_replaces_a_config_key_is_a_warning(tmp_path):
    etc = etc_tree(tmp_path, 'upstreams = ["127.0.0.1:9"]\n\n[log]\nevents = "from-file.jsonl"\n')
    guard = Process(
        [
            *GUARD_CMD,
            "serve",
            "--config",
            str(etc / "guard.toml"),
            "--listen",
            "127.0.0.1:0",
            "--events",
            str(tmp_path / "from-flag.jsonl"),
        ],
        cwd=tmp_path,
    )
    try:
        guard.wait_for("started version")
        warning = [line for line in guard.lines if "level=WARNING" in line and "flag wins" in line]
        assert len(warning) == 1 and f"not {etc / 'guard.toml'}:4: [log] events" in warning[0], warning
    finally:
        assert guard.stop() == 0


def test_logrotate_with_the_shipped_snippet_starts_a_new_events_file(tmp_path):
    logrotate = require_program("logrotate")
    zones_with(tmp_path)
    log = tmp_path / "log"
    log.mkdir(mode=0o750)
    events = log / "blocks.jsonl"
    guard = Process(
        [
            *GUARD_CMD,
            "serve",
            "--zones",
            "zones",
            "--upstream",
            "127.0.0.1:9",
            "--listen",
            "127.0.0.1:0",
            "--events",
            str(events),
        ],
        cwd=tmp_path,
    )
    try:
        guard.wait_for("started version")
        port = int(re.search(r"listening address=127.0.0.1 port=(\d+)", guard_output(guard))[1])

        def block(name: str, count: int, path: Path) -> None:
            import dns.message
            import dns.query

            dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=5)
            deadline = time.monotonic() + 10
            while len(event_lines(path)) < count:
                assert time.monotonic() < deadline, guard_output(guard)
                time.sleep(0.05)

        block("army.ml", 1, events)
        snippet = (ROOT / "docs" / "logrotate").read_text().replace("/var/log/resolverguard/blocks.jsonl", str(events))
        snippet = snippet.replace("systemctl kill --signal=HUP resolverguard.service", f"kill -HUP {guard.proc.pid}")
        assert f"kill -HUP {guard.proc.pid}" in snippet
        (tmp_path / "logrotate.conf").write_text(snippet)
        done = subprocess.run(
            [logrotate, "--force", "--state", str(tmp_path / "state"), str(tmp_path / "logrotate.conf")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        rotated = log / "blocks.jsonl.1"  # delaycompress: the newest rotation stays plain text
        assert [e["qname"] for e in event_lines(rotated)] == ["army.ml"]
        block("amry.mil", 1, events)
        assert [e["qname"] for e in event_lines(events)] == ["amry.mil"]
        assert [e["qname"] for e in event_lines(rotated)] == ["army.ml"]
    finally:
        assert guard.stop() == 0


# ---------------------------------------------------------------- 9. the config file stays watched


def test_config_edits_by_rename_and_in_place_are_all_seen(tmp_path, upstream, start_guard):
    """sed -i and most editors replace the file (a new inode); others write in place. Every edit counts."""
    sed = require_program("sed")
    config = tmp_path / "guard.toml"
    config.write_text('protect = ["army.mil"]\n')
    guard = start_guard("--config", str(config), "--upstream", upstream.address)

    def blocked(name: str) -> bool:
        reply = guard.query(name, "A", use_edns=0)
        return any(e.code == 15 for e in reply.extended_errors())

    def becomes_blocked(name: str) -> None:
        deadline = time.monotonic() + 30
        while not blocked(name):
            assert time.monotonic() < deadline, guard.output()
            time.sleep(0.1)

    assert blocked("amry.mil") and not blocked("gmial.com")
    for step, (domain, neighbour) in enumerate(
        [("gmail.com", "gmial.com"), ("outlook.com", "outlok.com"), ("example-bank.org", "exmaple-bank.org")]
    ):
        if step < 2:  # by rename, twice: the second edit is the one a watch on the file itself misses
            subprocess.run([sed, "-i", f's/\\]$/, "{domain}"]/', str(config)], check=True, timeout=30)
        else:  # in place: same inode
            with open(config, "r+") as fh:
                text = fh.read().replace("]", f', "{domain}"]')
                fh.seek(0)
                fh.write(text)
        becomes_blocked(neighbour)
    assert config.read_text().count(",") == 3


# ---------------------------------------------------------------- 10. /metrics: no _created, process_*, a known size


def test_metrics_have_no_created_series_keep_process_ones_and_grow_as_the_readme_says(tmp_path, start_guard):
    import urllib.request

    def scrape(*protect: str) -> list[str]:
        zones = tmp_path / f"zones{len(protect)}"
        shutil.copytree(ROOT / "zones", zones)
        port = free_port()
        flags = [x for p in protect for x in ("--protect", p)]
        start_guard("--upstream", "127.0.0.1:9", "--metrics", f"127.0.0.1:{port}", *flags, zones=zones)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        return [line for line in text.splitlines() if line and not line.startswith("#")]

    shipped, one_more = scrape(), scrape("example-bank.org")
    assert not [line for line in shipped if "_created" in line.split("{")[0].split(" ")[0]]
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert any(line.startswith(name + " ") for line in shipped), name
    stated = re.search(r"Each protected entry adds (\d+) series", (ROOT / "README.md").read_text())
    assert stated, "README: no series count per protected entry"
    assert len(one_more) - len(shipped) == int(stated[1])
    total = re.search(
        r"shipped defaults \(5 entries, one upstream\) expose (\d+) series", (ROOT / "README.md").read_text()
    )
    assert total and int(total[1]) == len(shipped), len(shipped)


# ---------------------------------------------------------------- the README's promises


def test_the_intros_examples_are_blocked_with_the_shipped_defaults(tmp_path):
    intro = (ROOT / "README.md").read_text().split("## Quick start")[0]
    listed = re.search(r"typo-neighbour detector \((.*?)\), then forwarding", intro, re.S)[1]
    shipped, _, with_domain = listed.partition(";")
    names = re.findall(r"`([a-z0-9.-]+)`", shipped)
    assert "army.ml" in names and len(names) >= 5, names
    for name in names:
        done = run("check", "--zones", str(ROOT / "zones"), name, cwd=tmp_path)
        assert done.returncode == 1, (name, done.stdout, done.stderr)
    narrow = re.fullmatch(r"\s*`(\S+)` too when `(\S+)` rather than the\s+whole `mil` is protected", with_domain)
    assert narrow, with_domain
    zones_with(tmp_path, f"{narrow[2]}\n")
    assert run("check", "--zones", "zones", narrow[1], cwd=tmp_path).returncode == 1


def test_the_examples_in_the_shipped_protect_file_are_blocked(tmp_path):
    header = (ROOT / "zones" / "default.protect").read_text().split("are blocked:", 1)[1].split("\n#   (")[0]
    names = re.findall(r"\b[a-z0-9-]+(?:\.[a-z0-9-]+)+\b", header)
    assert "army.ml" in names and len(names) >= 5, names
    for name in names:
        done = run("check", "--zones", str(ROOT / "zones"), name, cwd=tmp_path)
        assert done.returncode == 1, (name, done.stdout, done.stderr)


def test_the_readme_adds_a_prometheus_job_instead_of_overwriting_the_config():
    readme = (ROOT / "README.md").read_text()
    assert not re.search(r"cp [^\n]*prometheus\.yml[^\n]* /etc/prometheus/", readme), "overwrites prometheus.yml"
    job = re.search(r"scrape_configs:\n(  - job_name: resolverguard\n(?:    .*\n)+)", readme)
    assert job, "the job to add"
    shipped = (ROOT / "grafana" / "prometheus" / "prometheus.yml").read_text()
    assert "\n".join(x for x in job[1].splitlines() if not x.strip().startswith("#")) in "\n".join(
        x for x in shipped.splitlines() if not x.strip().startswith("#")
    )
