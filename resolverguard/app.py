"""The composition root: build config, policy holder, metrics, event log and the services; start and stop them."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from typing import Protocol

from . import __version__
from . import metrics as metrics_mod
from .cache import Cache
from .config import DEFAULT_LISTEN, Config
from .errors import ConfigError, os_reason
from .events import reopen_events, setup_events
from .export import setup_export
from .fastpath import FastTable
from .pipeline import build_pipeline
from .reload import PolicyHolder
from .server import Server
from .typo import TYPO_CLASSES
from .upstream import Upstream, UpstreamPool, from_resolv_conf

log = logging.getLogger(__name__)


class Service(Protocol):
    """One part of the running guard: started in order, stopped in reverse order."""

    name: str

    async def start(self) -> None: ...

    async def stop(self, grace: float) -> None: ...


class DnsService:
    """The DNS listeners (UDP and TCP) of [listen]; stopping finishes in-flight queries within the grace."""

    name = "dns"

    def __init__(self, cfg: Config, server: Server, reuse_port: bool) -> None:
        self.cfg, self.server, self.reuse_port = cfg, server, reuse_port

    async def start(self) -> None:
        for ep in self.cfg.listen:
            try:
                await self.server.listen(ep.host, ep.port, reuse_port=self.reuse_port)
            except OSError as exc:
                if str(ep) not in DEFAULT_LISTEN or ep.host == "127.0.0.1":
                    raise ConfigError(f"cannot listen for DNS on {ep} (UDP and TCP): {os_reason(exc)}") from None
                log.warning(
                    "not listening address=%s port=%d error=%s (a default; no IPv6 loopback?)",
                    ep.host,
                    ep.port,
                    exc.strerror or exc,
                )

    async def stop(self, grace: float) -> None:
        log.info("stopping: finishing in-flight queries grace_seconds=%s", grace)
        self.server.stop_listening()
        await self.server.drain(grace)


class MetricsService:
    """/metrics over HTTP (a prometheus_client thread); with --workers the supervisor serves it instead."""

    name = "metrics"

    def __init__(self, cfg: Config, metrics: metrics_mod.Metrics) -> None:
        self.cfg, self.metrics = cfg, metrics

    async def start(self) -> None:
        try:
            metrics_mod.serve(self.metrics.registry, self.cfg.metrics.host, self.cfg.metrics.port)
        except OSError as exc:
            reason = os_reason(exc, "web server or Prometheus exporter")
            raise ConfigError(f"cannot listen for /metrics on {self.cfg.metrics}: {reason}") from None
        log.info("metrics address=%s port=%d path=/metrics", self.cfg.metrics.host, self.cfg.metrics.port)

    async def stop(self, grace: float) -> None:
        pass  # a daemon thread: it ends with the process


class WatcherService:
    """Reload the policy when zones/ or the config file change; on SIGHUP (systemctl reload, logrotate's
    postrotate) reopen the events file and reread the policy."""

    name = "watcher"

    def __init__(self, holder: PolicyHolder) -> None:
        self.holder = holder
        self.task: asyncio.Future | None = None

    async def start(self) -> None:
        def hangup() -> None:
            reopen_events()
            asyncio.ensure_future(self.holder.reload())

        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, hangup)
        self.task = await self.holder.start_watching()  # watches exist before "started": later edits are seen

    async def stop(self, grace: float) -> None:
        if self.task is not None:
            self.task.cancel()


class ExportService:
    """The policy as an RPZ primary: publishes each new serial to the journal and sends NOTIFY."""

    name = "export"

    def __init__(self, export) -> None:
        self.export = export
        self.task: asyncio.Future | None = None

    async def start(self) -> None:
        self.task = asyncio.ensure_future(self.export.run())

    async def stop(self, grace: float) -> None:
        if self.task is not None:
            self.task.cancel()
        self.export.close()


class App:
    """Everything `serve` runs, built from one Config; run() starts the services and waits for a signal."""

    def __init__(self, cfg: Config, reread: Callable[[], Config] | None = None, reuse_port: bool = False) -> None:
        self.cfg = cfg
        # the SMTP sink runs in a process of its own, counting into a tally file: with --workers in the
        # supervisor's directory, else in one of ours that /metrics adds up with this process's file
        self.sink_dir = os.environ.get(metrics_mod.MULTIPROC_DIR) or ""
        self.own_dir = ""
        if cfg.smtp_sink_listen and not self.sink_dir:
            self.sink_dir = self.own_dir = tempfile.mkdtemp(prefix="resolverguard-metrics-")
        joined = bool(self.own_dir)
        self.metrics = metrics = metrics_mod.Metrics(directory=self.own_dir or None, joined=joined)
        self.holder = holder = PolicyHolder(cfg, metrics, reread)
        upstreams = [Upstream(e.host, e.port) for e in cfg.upstreams] or from_resolv_conf()
        if not upstreams:
            raise ConfigError("no upstream: give --upstream or list nameservers in /etc/resolv.conf")
        self.upstreams = upstreams
        # at 0 from start-up, so the first rejection is alertable; per entry only when the sink is on
        metrics.declare_sink(sorted(holder.current().guard.protected) if cfg.smtp_sink_listen else (), TYPO_CLASSES)
        metrics.declare_upstreams(u.name for u in upstreams)
        cache = Cache(
            cfg.cache_entries,
            cfg.cache_bytes,
            max_ttl=cfg.cache_max_ttl,
            min_ttl=cfg.cache_min_ttl,
            servfail_ttl=cfg.servfail_ttl,
            stale_ttl=cfg.serve_stale,
        )
        pool = UpstreamPool(
            upstreams,
            timeout=cfg.timeout,
            deadline=cfg.servfail_after,
            randomize_case=cfg.randomize_case,
            observe=lambda u, r, s: metrics.upstream(u.name, r, s),
            on_loop=metrics.forwarding_loops.inc,
        )
        pipeline = build_pipeline(cfg, holder.current, cache, pool, metrics, learn=holder.learn)
        export = setup_export(cfg, holder.current, metrics)
        self.server = Server(
            pipeline,
            metrics,
            tcp_idle_timeout=cfg.tcp_idle_timeout,
            tcp_max_connections=cfg.tcp_max_connections,
            max_inflight=cfg.max_inflight,
            export=export,
            fast=FastTable(metrics, holder.current, pipeline.unthrottled, max_entries=cfg.cache_entries),
        )
        self.services: list[Service] = [DnsService(cfg, self.server, reuse_port)]
        if cfg.metrics:
            self.services.append(MetricsService(cfg, metrics))
        if cfg.policy_listen:  # off by default
            from .policy_service import PolicyService

            self.services.append(PolicyService(cfg, holder.current, lambda: holder.cfg, metrics, reuse_port))
        from .expiry import ExceptionService

        self.services.append(ExceptionService(holder, metrics))  # exceptions end on time, without a reload
        if export is not None:
            self.services.append(ExportService(export))
        if cfg.smtp_sink_listen:  # off by default
            from .smtp_sink import SinkProcess

            self.services.append(
                SinkProcess(cfg, holder.current, lambda: holder.cfg, self.sink_dir, holder.on_publish, reuse_port)
            )
        self.services.append(WatcherService(holder))
        self.cache, self.pool, self.export, self.version = cache, pool, export, __version__
        self.started_at = time.time()
        from .control import ControlService, control_path, status_of

        if path := control_path(cfg):  # `resolverguard status` / `reload` (control.py); last: answers once all runs
            worker = int(os.environ.get("RESOLVERGUARD_WORKER", "0"))  # set by workers.py in each worker

            async def reload_now() -> dict:
                ok = await holder.reload()
                last = holder.last_reload or {}
                return {"ok": ok, "error": last.get("error"), "generation": holder.current().generation}

            self.services.append(
                ControlService(path, lambda: status_of(self, worker), reload_now, required=bool(cfg.control_socket))
            )
        self.holder = holder
        self.started: list[Service] = []
        self.stopping = asyncio.Event()  # set by SIGTERM or SIGINT (handlers installed by start())

    def exceptions_status(self) -> dict:
        """The exceptions part of `resolverguard status`: those in force and those ending within 7 days."""
        from .exceptions import SOON

        now = time.time()
        exceptions = self.holder.current().exceptions
        active = exceptions.active(now)
        return {
            "active": len(active),
            "entries": [e.as_json(now) for e in active],
            "expiring_soon": exceptions.expiring(now, SOON),
        }

    async def start(self) -> None:
        try:
            setup_events(self.cfg.events, self.metrics)
        except OSError as exc:
            where = self.cfg.where("events")
            raise ConfigError(f"{where}: cannot open the events file {self.cfg.events}: {os_reason(exc)}") from None
        for service in self.services:
            await service.start()
            self.started.append(service)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):  # before "started": a supervisor may signal as soon as it reads it
            loop.add_signal_handler(sig, self.stopping.set)
        log.info(
            "started version=%s upstreams=%s zones_dir=%s services=%s",
            __version__,
            ",".join(u.name for u in self.upstreams),
            self.cfg.zones_dir,
            ",".join(s.name for s in self.services),
        )

    async def stop(self) -> None:
        while self.started:
            await self.started.pop().stop(self.cfg.shutdown_grace)
        if self.own_dir:
            shutil.rmtree(self.own_dir, ignore_errors=True)
        log.info("stopped")

    async def run(self) -> int:
        """Start, wait for SIGTERM or SIGINT, stop; a service that cannot start stops the ones before it."""
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        gc.freeze()  # the start-up objects (policy, index, modules) leave the collector's scans: shorter pauses
        await self.stopping.wait()
        await self.stop()
        return 0


def run(cfg: Config, reread: Callable[[], Config] | None = None, reuse_port: bool = False) -> int:
    """Run the guard in this process until a signal; OSError from binding becomes a one-line ConfigError."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run

    async def main() -> int:
        return await App(cfg, reread, reuse_port).run()

    try:
        return runner(main())
    except OSError as exc:
        raise ConfigError(f"cannot listen: {os_reason(exc)}") from None
