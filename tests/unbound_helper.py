"""Start a real Unbound on 127.0.0.1 with an RPZ (zonefile or primary) for integration tests; stop it by PID.

Unbound never sends a packet off the box: "." is forwarded to a closed 127.0.0.1 port, there are no
trust anchors (the validator module stays idle), and names that a test needs to resolve normally
are given as local-data.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import dns.exception
import dns.message
import dns.query
import dns.rcode
from fakes import free_port
from realprog import require_program

RPZ_NAME = "rpz.resolverguard."
DEFAULT_LOCAL_DATA = ("army.mil. 300 IN A 192.0.2.10", "mail.army.mil. 300 IN A 192.0.2.11")


class Unbound(NamedTuple):
    proc: subprocess.Popen[bytes]
    port: int
    config: Path
    log: Path


def unbound_config(
    directory: Path,
    port: int,
    *,
    rpz_zonefile: Path | None = None,
    rpz_primary: str | None = None,
    rpz_name: str = RPZ_NAME,
    local_data: Iterable[str] = DEFAULT_LOCAL_DATA,
    dead_port: int | None = None,
) -> str:
    """unbound.conf text. rpz_primary: "127.0.0.1@PORT" (the guard's AXFR); both may be given."""
    dead = dead_port if dead_port is not None else free_port()
    lines = [
        "server:",
        "    interface: 127.0.0.1",
        f"    port: {port}",
        "    do-ip6: no",
        "    do-daemonize: no",
        '    username: ""',
        '    chroot: ""',
        f'    directory: "{directory}"',
        f'    pidfile: "{directory}/unbound.pid"',
        f'    logfile: "{directory}/unbound.log"',
        "    use-syslog: no",
        "    verbosity: 1",
        "    num-threads: 1",
        "    so-reuseport: no",
        '    module-config: "respip validator iterator"',
        "    do-not-query-localhost: no",  # the only upstream is a closed port on 127.0.0.1
        "    access-control: 127.0.0.0/8 allow",
        "    qname-minimisation: no",
        "    prefetch: no",
        "    serve-expired: no",
        *(f'    local-data: "{rr}"' for rr in local_data),
        "remote-control:",
        "    control-enable: no",
        "rpz:",
        f'    name: "{rpz_name}"',
    ]
    if rpz_zonefile is not None:
        lines.append(f'    zonefile: "{rpz_zonefile}"')
    if rpz_primary is not None:
        lines.append(f"    primary: {rpz_primary}")
    lines += [
        "    rpz-log: no",
        "forward-zone:",
        '    name: "."',
        f"    forward-addr: 127.0.0.1@{dead}",
    ]
    return "\n".join(lines) + "\n"


def query(port: int, name: str, rdtype: str = "A", *, timeout: float = 2.0, tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, timeout=timeout)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=timeout)


def start_unbound(
    tmp_path: Path,
    rpz_zonefile: Path | None = None,
    rpz_primary: str | None = None,
    port: int | None = None,
    *,
    rpz_name: str = RPZ_NAME,
    local_data: Iterable[str] = DEFAULT_LOCAL_DATA,
    ready_timeout: float = 10.0,
) -> Unbound:
    """Write unbound.conf in tmp_path, check it, run `unbound -d` and wait until it answers."""
    unbound = require_program("unbound")
    port = port if port is not None else free_port()
    config = tmp_path / "unbound.conf"
    log = tmp_path / "unbound.log"
    config.write_text(
        unbound_config(
            tmp_path, port, rpz_zonefile=rpz_zonefile, rpz_primary=rpz_primary, rpz_name=rpz_name, local_data=local_data
        )
    )
    checkconf = Path(unbound).with_name("unbound-checkconf")
    if checkconf.exists():
        check = subprocess.run([str(checkconf), str(config)], capture_output=True, text=True, timeout=20)
        if check.returncode != 0:
            raise RuntimeError(f"unbound-checkconf failed:\n{check.stdout}{check.stderr}")
    with open(tmp_path / "unbound.stderr", "wb") as stderr:
        proc = subprocess.Popen(
            [unbound, "-d", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    server = Unbound(proc, port, config, log)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = _read(tmp_path / "unbound.stderr")
            raise RuntimeError(f"unbound exited with {proc.returncode}:\n{err}\n{_read(log)}")
        try:
            reply = query(port, "army.mil.", timeout=0.2)
        except (dns.exception.Timeout, OSError):
            time.sleep(0.05)
            continue
        if reply.rcode() == dns.rcode.NOERROR:
            return server
    stop_unbound(server)
    raise RuntimeError(f"unbound did not answer within {ready_timeout}s:\n{_read(log)}")


def stop_unbound(server: Unbound, timeout: float = 5.0) -> None:
    """SIGTERM the process we started (by its PID), SIGKILL if it lingers."""
    proc = server.proc
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)


@contextmanager
def running_unbound(tmp_path: Path, **kwargs: object) -> Iterator[Unbound]:
    server = start_unbound(tmp_path, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        stop_unbound(server)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return "(no log)"
