"""A mail network in a network namespace: its loopback holds the guard, a fake upstream DNS and a stand-in MX.

The namespace's /etc/resolv.conf (ip netns exec mounts /etc/netns/NAME/resolv.conf over it) names only the
guard, so the MTA under test resolves through it and nothing leaves the namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from fakes import FakeUpstream
from polling import wait_until
from realprog import in_ci, require_program

CLONE_NEWNET = 0x40000000
GUARD_DNS = "127.0.0.1"  # resolv.conf cannot name a port: the guard listens on 53 inside the namespace
SINK = "127.0.0.2"  # must not be an address of the MTA (Postfix: "mail for army.ml loops back to myself")
MX = "127.0.0.3"  # the stand-in for the real army.mil MX


def require_root_netns() -> str:
    """The path of ip(8); skip (fail under CI=true) without root, which namespaces and MTAs need."""
    ip = require_program("ip")
    if os.geteuid() != 0:
        if in_ci():
            pytest.fail("network namespaces need root; CI=true requires them", pytrace=False)
        pytest.skip("network namespaces need root")
    return ip


def poll(check, what: str, deadline: float = 60.0):
    """check() until it returns something true (polling.wait_until, with the mail tests' longer deadline)."""
    return wait_until(check, what, timeout=deadline, interval=0.1)


def unfolded(text: str) -> str:
    """MTAs wrap long reasons across lines: compare with whitespace runs collapsed."""
    return " ".join(text.split())


class Recorder:
    """aiosmtpd handler of the stand-in MX: accepts and keeps every message."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 stored"


class MailNet:
    """A namespace with lo up, its resolv.conf, a fake upstream DNS and a recording MX; close() undoes it all."""

    def __init__(self, prefix: str = "rgmail") -> None:
        self.ip = require_root_netns()
        self.name = f"{prefix}{os.getpid()}"
        subprocess.run([self.ip, "netns", "add", self.name], check=True)
        self.etc = Path("/etc/netns") / self.name
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.etc / "resolv.conf").write_text(f"nameserver {GUARD_DNS}\noptions attempts:2 timeout:2\n")
        subprocess.run([self.ip, "netns", "exec", self.name, "ip", "link", "set", "lo", "up"], check=True)
        self.dir = Path(tempfile.mkdtemp(prefix="rgmail-"))
        self.dir.chmod(0o755)  # MTA daemons drop root and must still reach their queue under it
        self.recorder = Recorder()
        with self.inside():  # sockets and the threads serving them are created in the namespace
            self.dns = FakeUpstream(GUARD_DNS)
            self.mx = Controller(self.recorder, hostname=MX, port=25, ready_timeout=10)
            self.mx.start()
        self.dns.on("army.mil", "MX", "army.mil. 300 MX 10 mx.army.mil.")
        self.dns.on("mx.army.mil", "A", f"mx.army.mil. 300 A {MX}")

    @contextlib.contextmanager
    def inside(self):
        """Run the block with this thread in the namespace (threads started meanwhile stay there)."""
        libc = ctypes.CDLL(None, use_errno=True)
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the test namespace")
            try:
                yield
            finally:
                if libc.setns(home, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back")
        finally:
            os.close(home)
            os.close(target)

    def exec_prefix(self) -> list[str]:
        return [self.ip, "netns", "exec", self.name]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.mx.stop()
        self.dns.close()
        subprocess.run([self.ip, "netns", "del", self.name], check=False)
        for child in self.etc.iterdir():
            child.unlink()
        self.etc.rmdir()
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)


def guard_config(path: Path, upstream_port: int, mode: str, protect: str = "army.mil") -> None:
    path.write_text(f"""
listen = ["{GUARD_DNS}:53"]
upstreams = ["{GUARD_DNS}:{upstream_port}"]
protect = ["{protect}"]
[typo]
action = "sink"
[sink]
ipv4 = "{SINK}"
[smtp_sink]
listen = ["{SINK}:25"]
mode = "{mode}"
""")
