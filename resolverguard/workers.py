"""--workers N: N forked processes sharing the listen ports (SO_REUSEPORT), one /metrics, one export state dir."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace

from .config import Config, Endpoint
from .errors import ConfigError, os_reason

log = logging.getLogger(__name__)
RESTART_DELAY = 1.0  # seconds before a worker that died is started again


def supervise(cfg: Config, run: Callable[[Config], int]) -> int:
    """Fork cfg.workers processes that each run(cfg) on the same ports; forward TERM, INT and HUP to them.

    The parent validates the policy and binds nothing for long: a port 0 is turned into one concrete
    free port first, so every worker joins the same SO_REUSEPORT group. Each worker counts into a tally
    file of one metrics directory (resolverguard.tally); the parent serves /metrics, adding the files up.
    A worker that dies is restarted.
    """
    metrics_dir = tempfile.mkdtemp(prefix="resolverguard-metrics-")
    # the workers' tallies go there (every metric, the export's too)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # One export state directory for all workers: the same serial, journal and notify state everywhere.
    temporary = "" if cfg.export_dir() else tempfile.mkdtemp(prefix="resolverguard-export-")  # removed at exit
    try:
        from .reload import load_policy

        load_policy(cfg)  # a bad zone or list fails once, here, with exit 2
        worker_cfg = replace(
            cfg,
            listen=tuple(_concrete(ep) for ep in cfg.listen),
            metrics=None,
            export_state_dir=cfg.export_dir() or temporary,
        )
        return _run_workers(cfg, worker_cfg, run)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)


def _run_workers(cfg: Config, worker_cfg: Config, run: Callable[[Config], int]) -> int:
    from . import metrics as metrics_mod
    from .control import control_path

    children: dict[int, int] = {}  # pid -> worker number
    base = control_path(cfg)  # every worker answers `status` and `reload` on a socket of its own
    control_sockets = {n: f"{base}.{n}" for n in range(worker_cfg.workers)} if base else {}
    state = {"stopping": False}

    def start(number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: default signal dispositions, then the ordinary single-process server
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            code = 1
            os.environ["RESOLVERGUARD_WORKER"] = str(number)  # its control socket is <path>.<number>
            try:
                code = run(replace(worker_cfg, control_socket=control_sockets.get(number, worker_cfg.control_socket)))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            finally:
                os._exit(code)
        children[pid] = number
        log.info("worker started number=%d pid=%d", number, pid)

    def forward(sig: int, _frame: object) -> None:
        if sig != signal.SIGHUP:
            state["stopping"] = True
        for pid in list(children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    for number in range(worker_cfg.workers):
        start(number)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    if cfg.metrics:
        try:
            metrics_mod.serve(None, cfg.metrics.host, cfg.metrics.port)
        except OSError as exc:
            forward(signal.SIGTERM, None)
            for pid in list(children):
                os.waitpid(pid, 0)
            reason = os_reason(exc, "web server or Prometheus exporter")
            raise ConfigError(f"cannot listen for /metrics on {cfg.metrics}: {reason}") from None
        log.info(
            "metrics address=%s port=%d path=/metrics workers=%d",
            cfg.metrics.host,
            cfg.metrics.port,
            worker_cfg.workers,
        )
    worst = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        number = children.pop(pid, None)
        if number is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        if state["stopping"]:
            worst = max(worst, code if code > 0 else 0)
            continue
        if code == 2:  # a user error (e.g. cannot listen): restarting would not help
            forward(signal.SIGTERM, None)
            worst = 2
            continue
        log.error("worker died number=%d pid=%d exit=%d: restarting", number, pid, code)
        time.sleep(RESTART_DELAY)
        start(number)
    return worst


def _concrete(ep: Endpoint) -> Endpoint:
    """Port 0 → a port free for both UDP and TCP on ep.host (checked with SO_REUSEPORT sockets, then closed)."""
    family = socket.AF_INET6 if ":" in ep.host else socket.AF_INET
    for _ in range(20):
        socks = [socket.socket(family, kind) for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)]
        try:
            for s in socks:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            socks[0].bind((ep.host, ep.port))
            port = socks[0].getsockname()[1]
            socks[1].bind((ep.host, port))
            return Endpoint(ep.host, port)
        except OSError as exc:
            if ep.port:
                raise ConfigError(f"cannot listen on {ep}: {exc.strerror or exc}") from None
        finally:
            for s in socks:
                s.close()
    raise ConfigError(f"cannot listen on {ep}: no free port")
