"""The control channel: `resolverguard status` and `resolverguard reload` talk to the running guard.

Like unbound-control, over a local Unix socket, never the network: the socket file is mode 0600, owned by
the guard's user, and each connection's peer credentials (SO_PEERCRED) must be root or that user. The
socket's path comes from the config file both sides read (``[control] socket``; by default one per config
file under /run/resolverguard, see control_path), so `status --config F` finds the guard `serve --config F`
started. With --workers N each worker listens on ``<path>.<number>`` and the client asks every one.

The protocol is one JSON object per line each way: ``{"command": "status"}`` or ``{"command": "reload"}``,
answered by the worker's status object or ``{"ok": bool, "error": str | null, "generation": int}``. The
functions down to ``exit_code`` are pure (bytes and dicts in, bytes and dicts out); the server and the
client are the thin I/O around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .config import Config

log = logging.getLogger(__name__)
RUN_DIR = "/run/resolverguard"  # the unit's RuntimeDirectory=
COMMANDS = ("status", "reload")
MAX_LINE = 4096  # a request is one short line; anything longer is refused

# ---------------------------------------------------------------- pure: paths, requests, replies, verdicts


def control_path(cfg: Config) -> str | None:
    """[control] socket, else /run/resolverguard/control-<hash of the config file's path>.sock; None: off.

    Without a config file there is no default (two guards started from flags alone would share one path).
    """
    if cfg.control_socket:
        return None if cfg.control_socket == "off" else cfg.control_socket
    if not cfg.config_path:
        return None
    digest = hashlib.sha256(os.path.realpath(cfg.config_path).encode()).hexdigest()[:12]
    return f"{RUN_DIR}/control-{digest}.sock"


def request(command: str) -> bytes:
    return json.dumps({"command": command}).encode() + b"\n"


def parse_request(line: bytes) -> str:
    """The command of one request line; ValueError when it is not one this channel knows."""
    try:
        command = json.loads(line.decode("utf-8"))["command"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise ValueError('expected one JSON line {"command": "status" | "reload"}') from None
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; known: {', '.join(COMMANDS)}")
    return command


def encode(reply: dict) -> bytes:
    return json.dumps(reply, separators=(",", ":")).encode() + b"\n"


def degraded_reasons(status: dict) -> list[str]:
    """Why one worker's status is degraded (empty: serving)."""
    out = []
    last = status.get("policy", {}).get("last_reload") or {}
    if last.get("ok") is False:
        out.append(f"last reload failed: {last.get('error')}")
    upstreams = status.get("upstreams") or []
    if upstreams and all(u.get("state") == "down" for u in upstreams):
        out.append("every upstream is down")
    return out


def exit_code(statuses: list[dict]) -> int:
    """0 serving, 1 degraded (a worker's last reload failed, or every upstream down), 2 unreachable."""
    if not statuses or any("unreachable" in s for s in statuses):
        return 2
    return 1 if any(degraded_reasons(s) for s in statuses) else 0


def render(statuses: list[dict]) -> str:
    """The human-readable status, one block per worker."""
    lines = []
    for s in statuses:
        if "unreachable" in s:
            lines.append(f"{s['socket']}: unreachable: {s['unreachable']}")
            continue
        p, ex = s["policy"], s.get("export")
        last = p.get("last_reload")
        lines += [
            f"worker {s['worker']} pid {s['pid']}: resolverguard {s['version']}, up {s['uptime_seconds']:.0f} s",
            f"  policy generation {p['generation']}, {p['protected']} protected entries, "
            f"{sum(p['rules'].values())} override rules, {p['learned_labels']} learned labels",
            "  last reload: "
            + (
                "none since start"
                if not last
                else f"{last['time']} {'ok' if last['ok'] else 'FAILED: ' + str(last['error'])}"
            ),
            f"  cache entries {s['cache_entries']}",
        ]
        for u in s["upstreams"]:
            srtt = f", srtt {u['srtt_ms']:.1f} ms" if u.get("srtt_ms") is not None else ""
            lines.append(f"  upstream {u['name']}: {u['state']}{srtt}")
        if ex:
            acked = ", ".join(f"{k} {v}" for k, v in sorted(ex["acknowledged"].items())) or "none"
            lines.append(f"  export serial {ex['serial']}; acknowledged: {acked}")
        if s.get("exceptions") is not None:
            e = s["exceptions"]
            lines.append(f"  exceptions active {e.get('active')}, expiring within 7 days {e.get('expiring_soon')}")
        for reason in degraded_reasons(s):
            lines.append(f"  DEGRADED: {reason}")
    return "\n".join(lines)


# ---------------------------------------------------------------- the guard's side


def status_of(app: Any, worker: int | None) -> dict:
    """The status object of one running App (duck-typed: holder, upstreams, cache, export, started_at)."""
    policy = app.holder.current()
    now = time.monotonic()
    upstreams = []
    for u in app.upstreams:  # upstream.pool.Upstream
        state = "down" if u.down_until > now or u.up is False else ("up" if u.up else "unknown")
        upstreams.append({"name": u.name, "state": state, "srtt_ms": u.srtt * 1000 if u.srtt is not None else None})
    export = None
    if app.export is not None:
        journal = app.export.journal
        export = {"serial": journal.serial, "acknowledged": journal.acknowledged("")}
        export["acknowledged"].pop("", None)
    last = getattr(app.holder, "last_reload", None)
    return {
        "version": app.version,
        "pid": os.getpid(),
        "worker": worker if worker is not None else 0,
        "uptime_seconds": time.time() - app.started_at,
        "policy": {
            "generation": policy.generation,
            "protected": len(policy.guard.protected),
            "rules": dict(policy.table.rule_count),
            "learned_labels": policy.guard.learned_count,
            "last_reload": last,
        },
        "upstreams": upstreams,
        "cache_entries": len(app.cache),
        "export": export,
        "exceptions": app.exceptions_status(),  # {"active": n, "expiring_soon": n, "entries": [...]}
    }


class ControlService:
    """The control socket of one worker (a Service of app.App): answers status and reload."""

    name = "control"

    def __init__(
        self, path: str, status: Callable[[], dict], reload: Callable[[], Awaitable[dict]], required: bool = True
    ) -> None:
        self.path, self.status, self.reload = path, status, reload
        self.required = required  # [control] socket given: failing to open it stops the start; the default: a WARNING
        self.server: asyncio.AbstractServer | None = None
        self.uid = os.geteuid()

    async def start(self) -> None:
        from .errors import ConfigError, os_reason

        directory = Path(self.path).parent
        try:
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if _alive(self.path):
                    raise ConfigError(f"control socket {self.path}: another guard answers there")
                os.unlink(self.path)  # a stale socket of a guard that was killed
            old = os.umask(0o177)  # the socket is created 0600: only this user (and root) may connect
            try:
                self.server = await asyncio.start_unix_server(self._serve, self.path, limit=MAX_LINE)
            finally:
                os.umask(old)
            os.chmod(self.path, 0o600)
        except (OSError, ConfigError) as exc:
            reason = os_reason(exc, "guard") if isinstance(exc, OSError) else str(exc)
            if self.required:
                raise ConfigError(f"cannot open the control socket {self.path}: {reason}") from None
            log.warning("no control socket path=%s error=%s (status and reload unavailable)", self.path, reason)
            self.server = None
            return
        log.info("control socket path=%s mode=0600 uid=%d", self.path, self.uid)

    async def stop(self, grace: float) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid not in (0, self.uid):
                log.warning("control connection refused uid=%d (only root or uid %d)", uid, self.uid)
                writer.write(encode({"error": "permission denied: only root or the guard's user"}))
                return
            try:
                line = await asyncio.wait_for(reader.readline(), 10)
                command = parse_request(line)
            except (TimeoutError, ValueError, asyncio.LimitOverrunError) as exc:
                writer.write(encode({"error": str(exc) or "no request"}))
                return
            reply = self.status() if command == "status" else await self.reload()
            writer.write(encode(reply))
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


def _alive(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


# ---------------------------------------------------------------- the client's side


def worker_paths(path: str) -> list[str]:
    """The sockets of the guard at path: path itself, or with --workers N its <path>.<number> ones."""
    if os.path.exists(path):
        return [path]
    return sorted(glob.glob(glob.escape(path) + ".[0-9]*"), key=lambda p: int(p.rsplit(".", 1)[1]))


def ask(path: str, command: str, timeout: float = 60.0) -> dict:
    """One request to one socket; {"unreachable": why, "socket": path} when it cannot be asked."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(request(command))
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except PermissionError:
        return {"unreachable": "permission denied (only root or the guard's user may use it)", "socket": path}
    except OSError as exc:
        return {"unreachable": exc.strerror or str(exc), "socket": path}
    try:
        reply = json.loads(data)
    except ValueError:
        return {"unreachable": "no reply", "socket": path}
    if "error" in reply and command == "status":
        return {"unreachable": reply["error"], "socket": path}
    return reply
