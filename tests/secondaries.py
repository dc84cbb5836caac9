"""Real RPZ secondaries (BIND 9, Unbound, PowerDNS Recursor) of a running guard, for the fleet tests.

Each daemon runs in the foreground on 127.0.0.1 with its own config and working directory, forwards
everything else to a closed loopback port (nothing leaves the box), and is stopped by its PID.
The guard side: a TSIG-protected export with NOTIFY to the secondary and a journal in tmp_path.
"""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.tsigkeyring
from fakes import GUARD_CMD, Guard, free_port, stop_process

ORIGIN = "rpz.resolverguard."
KEY_NAME = "guard-key."
SECRET = base64.b64encode(b"resolverguard fleet test secret!").decode()
OVERRIDES = """$ORIGIN overrides.
$TTL 60
@ SOA ns.invalid. hostmaster.invalid. 1 3600 600 86400 60
  NS ns.invalid.
blocked.example CNAME .
"""
NEW_RULE = "newblock.example CNAME .\n"


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    port: int
    directory: Path
    log: Path

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.proc, timeout=timeout)

    def logs(self) -> str:
        out = []
        for path in sorted(self.directory.glob("*.log")):
            out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(out)


def start(argv: list[str], directory: Path, port: int) -> Daemon:
    log = directory / "stderr.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, cwd=directory, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    return Daemon(proc, port, directory, log)


def rcode(port: int, name: str, timeout: float = 0.5) -> str | None:
    """The rcode the daemon gives for an A query of name, or None if it did not answer in time."""
    try:
        reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=timeout)
    except (dns.exception.Timeout, OSError):
        return None
    return dns.rcode.to_text(reply.rcode())


def wait_for(check: Callable[[], bool], seconds: float, daemon: Daemon, guard: Guard, what: str) -> float:
    """Poll check() until it is true; fail with both sides' logs after ``seconds``. Returns the time taken."""
    started = time.monotonic()
    while not check():
        if daemon.proc.poll() is not None:
            raise AssertionError(f"secondary exited with {daemon.proc.returncode}:\n{daemon.logs()}")
        if time.monotonic() - started > seconds:
            raise AssertionError(f"{what} not within {seconds}s\n{daemon.logs()}\n--- guard\n{guard.output()[-6000:]}")
        time.sleep(0.05)
    return time.monotonic() - started


def guard_config(tmp_path: Path, upstream: str, secondary_port: int, *, tsig: bool = True) -> tuple[Path, Path]:
    """The guard's config file and zones dir: one protected domain, one override zone, TSIG, NOTIFY."""
    zones = tmp_path / "zones"
    zones.mkdir(exist_ok=True)
    (zones / "a.protect").write_text("army.mil\n")
    (zones / "10-overrides.rpz").write_text(OVERRIDES)
    secret = tmp_path / "tsig.secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    tsig_line = (
        f'tsig = {{ name = "{KEY_NAME}", algorithm = "hmac-sha256", secret_file = "{secret}" }}\n' if tsig else ""
    )
    cfg = tmp_path / "guard.toml"
    cfg.write_text(
        f'upstreams = ["{upstream}"]\nzones_dir = "{zones}"\n'
        f'[export]\nclients = ["127.0.0.0/8"]\n{tsig_line}'
        f'notify = ["127.0.0.1:{secondary_port}"]\nstate_dir = "{tmp_path / "state"}"\n'
    )
    return cfg, zones


def unsigned_transfer_refused(guard: Guard) -> bool:
    query = dns.message.make_query(ORIGIN, "AXFR")
    unsigned = dns.query.tcp(query, "127.0.0.1", port=guard.port, timeout=3)
    wrong = dns.message.make_query(ORIGIN, "AXFR")
    wrong.use_tsig(dns.tsigkeyring.from_text({KEY_NAME: base64.b64encode(b"x" * 32).decode()}), KEY_NAME)
    try:
        bad = dns.query.tcp(wrong, "127.0.0.1", port=guard.port, timeout=3).rcode()
    except dns.exception.DNSException:  # dnspython rejects an unsigned NOTAUTH to a signed query
        bad = dns.rcode.NOTAUTH
    return unsigned.rcode() == dns.rcode.REFUSED and bad == dns.rcode.NOTAUTH


def fleet_scenario(
    tmp_path: Path,
    upstream: str,
    start_guard: Callable[..., Guard],
    start_secondary: Callable[[Path, int, int], Daemon],
    *,
    tsig: bool = True,
    check_secondary: bool = False,
    by_notify: bool = True,
) -> dict[str, float]:
    """Guard + secondary: initial pull, enforcement, a one-rule change by NOTIFY + IXFR, key enforcement."""
    port = free_port()
    cfg, zones = guard_config(tmp_path, upstream, port, tsig=tsig)
    guard = start_guard("--config", str(cfg), zones=zones)
    started = time.monotonic()
    while "rpz export published" not in guard.output():  # a secondary started earlier only retries later
        assert time.monotonic() - started < 30, guard.output()
        time.sleep(0.05)
    secondary_dir = tmp_path / "secondary"
    secondary_dir.mkdir()
    daemon = start_secondary(secondary_dir, port, guard.port)
    try:
        wait_for(lambda: rcode(port, "army.ml.") == "NXDOMAIN", 30, daemon, guard, "typo neighbour blocked")
        assert rcode(port, "blocked.example.") == "NXDOMAIN"
        assert rcode(port, "x.army.ml.") == "NXDOMAIN"
        with open(zones / "10-overrides.rpz", "a") as fh:
            fh.write(NEW_RULE)
        taken = wait_for(
            lambda: rcode(port, "newblock.example.", 0.3) == "NXDOMAIN",
            5,
            daemon,
            guard,
            "the new rule enforced by the secondary",
        )
        wait_for(lambda: "transfer kind=ixfr " in guard.output(), 5, daemon, guard, "an IXFR in the guard's log")
        if by_notify:  # the SOA refresh is 60 s: a change seen within 5 s came by the acknowledged NOTIFY
            assert "notify acknowledged" in guard.output(), guard.output()
        if tsig:
            assert unsigned_transfer_refused(guard)
        if check_secondary:
            check = [
                *GUARD_CMD,
                "export-rpz",
                "--config",
                str(cfg),
                "--listen",
                f"127.0.0.1:{guard.port}",
                "--check-secondary",
            ]
            in_sync = subprocess.run([*check, f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=30)
            assert in_sync.returncode == 0 and "in sync" in in_sync.stdout, in_sync.stdout + in_sync.stderr
            gone = subprocess.run([*check, f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=30)
            assert gone.returncode == 1 and "not in sync" in gone.stdout, gone.stdout + gone.stderr
        return {"change_seconds": taken}
    finally:
        daemon.stop()


def bind_config(directory: Path, port: int, guard_port: int, dead_port: int) -> str:
    return f"""
options {{
    directory "{directory}";
    pid-file "{directory}/named.pid";
    session-keyfile "{directory}/session.key";
    managed-keys-directory "{directory}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion yes;
    allow-query {{ 127.0.0.0/8; }};
    allow-recursion {{ 127.0.0.0/8; }};
    forwarders {{ 127.0.0.1 port {dead_port}; }};
    forward only;
    dnssec-validation no;
    notify no;
    response-policy {{ zone "{ORIGIN}" min-update-interval 0; }} qname-wait-recurse no;
}};
controls {{ }};
key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{SECRET}"; }};
zone "{ORIGIN}" {{
    type secondary;
    primaries port {guard_port} {{ 127.0.0.1 key "{KEY_NAME}"; }};
    file "{directory}/rpz.db";
}};
logging {{
    channel main {{ file "{directory}/named.log"; severity info; print-time yes; print-category yes; }};
    category default {{ main; }};
    category xfer-in {{ main; }};
    category notify {{ main; }};
}};
"""


def start_bind(named: str, directory: Path, port: int, guard_port: int) -> Daemon:
    conf = directory / "named.conf"
    conf.write_text(bind_config(directory, port, guard_port, free_port()))
    checkconf = Path(named).with_name("named-checkconf")
    if checkconf.exists():
        check = subprocess.run([str(checkconf), str(conf)], capture_output=True, text=True, timeout=20)
        assert check.returncode == 0, check.stdout + check.stderr
    return start([named, "-f", "-c", str(conf), "-n", "1"], directory, port)


def pdns_config(directory: Path, port: int, guard_port: int, dead_port: int, refresh: int) -> tuple[str, str]:
    """recursor.conf and its Lua config (Recursor 4.8: rpzPrimary in lua-config-file).

    Recursor 4.8 (Debian 12) answers a NOTIFY for the RPZ but only wipes its cache for that name; it
    polls the primary's SOA every ``refresh`` seconds instead (NOTIFY-triggered RPZ transfers came later).
    """
    lua = (
        f'rpzPrimary("127.0.0.1:{guard_port}", "{ORIGIN}", {{tsigname="{KEY_NAME}", '
        f'tsigalgo="hmac-sha256", tsigsecret="{SECRET}", refresh={refresh}}})\n'
    )
    conf = f"""
config-dir={directory}
socket-dir={directory}
local-address=127.0.0.1
local-port={port}
forward-zones-recurse=.=127.0.0.1:{dead_port}
dnssec=off
daemon=no
write-pid=no
threads=1
disable-packetcache=yes
lua-config-file={directory}/rpz.lua
allow-notify-from=127.0.0.0/8
allow-notify-for={ORIGIN}
disable-syslog=yes
loglevel=6
quiet=no
"""
    return conf, lua


def start_pdns(recursor: str, directory: Path, port: int, guard_port: int, refresh: int = 3600) -> Daemon:
    conf, lua = pdns_config(directory, port, guard_port, free_port(), refresh)
    (directory / "recursor.conf").write_text(conf)
    (directory / "rpz.lua").write_text(lua)
    return start([recursor, f"--config-dir={directory}"], directory, port)
