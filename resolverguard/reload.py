"""Build the Policy from config and zones/, swap it atomically, and reload on SIGHUP or file changes."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from . import config as config_mod
from . import exceptions as exceptions_mod
from . import names
from .codes import OTHER_QTYPE
from .config import QTYPE_NUMBERS, Config
from .errors import ConfigError
from .metrics import QTYPES, Metrics
from .policy import Policy, with_exceptions
from .rpz import PolicyTable, load_zone_dir
from .typo import TypoGuard, learned, load_domain_list
from .wire import Query

log = logging.getLogger(__name__)


def policy_files(cfg: Config) -> dict[str, list[Path]]:
    """The files under zones/ by kind: *.rpz override zones, *.protect and *.allow domain lists."""
    root = Path(cfg.zones_dir)
    if not root.is_dir():
        return {"rpz": [], "protect": [], "allow": []}
    return {kind: sorted(root.glob(f"*.{kind}")) for kind in ("rpz", "protect", "allow")}


def _check_zones_dir(cfg: Config) -> None:
    """A zones_dir that is missing or unreadable is an error, not an empty policy."""
    if not cfg.zones_dir:
        return
    where = f"zones_dir {cfg.zones_dir}"
    try:
        os.listdir(cfg.zones_dir)
    except FileNotFoundError:
        raise ConfigError(
            f"{where}: no such directory (relative to the config file, or to the current "
            "directory without one; give --zones or --config)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None


def load_policy(cfg: Config, generation: int = 0) -> Policy:
    """Parse and validate everything that decides; raises ConfigError (naming file and line) on any error."""
    _check_zones_dir(cfg)
    files = policy_files(cfg)
    protect = list(cfg.protect)
    allow = list(cfg.allow)
    for path in files["protect"]:
        protect += load_domain_list(path)
    for path in files["allow"]:
        allow += load_domain_list(path)
    zones = load_zone_dir(cfg.zones_dir) if files["rpz"] else []
    try:
        guard = TypoGuard.build(
            protect,
            allow,
            class_policy=cfg.typo_classes,
            tld_second_level=cfg.tld_second_level or None,
            learned=learned.load(learned.path_in(cfg.state_dir)),
        )
    except ValueError as exc:
        raise ConfigError(f"{cfg.config_path or 'config'}: {exc}") from None
    for name in cfg.domain_actions:  # an action for a name nothing protects would silently do nothing
        if not any(p in guard.protected for p in names.parents(name)):
            raise ConfigError(
                f"{cfg.where('domain_actions')}: {name} is not a protected domain (nor under a "
                "protected entry such as mil)"
            )
    for name in cfg.tld_second_level:
        if name not in guard.protected:
            raise ConfigError(f"{cfg.where('tld_second_level')}: {name} is not a protected entry")
    for warning in policy_warnings(cfg, guard):
        log.warning("%s", warning)
    if not guard.protected and not cfg.allow_empty:
        raise ConfigError(
            f"nothing to protect: no domain in {Path(cfg.zones_dir) / '*.protect'}, protect or "
            "--protect; give --allow-empty (or allow_empty = true) to run without protection"
        )
    table = PolicyTable(zones)
    exceptions = exceptions_mod.load(str(Path(cfg.zones_dir) / exceptions_mod.FILE_NAME)) if cfg.zones_dir else None
    if exceptions is not None and os.path.exists(exceptions.path):  # the exceptions zone, first: they beat overrides
        table = with_exceptions(table, exceptions, time.time())
    return Policy(
        table=table,
        exceptions=exceptions or exceptions_mod.EMPTY,
        guard=guard,
        typo_action=cfg.typo_action,
        domain_actions=dict(cfg.domain_actions),
        typo_qtypes=frozenset(QTYPE_NUMBERS[t.upper()] for t in cfg.typo_qtypes),
        generation=generation,
    )


def policy_warnings(cfg: Config, guard: TypoGuard) -> list[str]:
    """What loads but is probably a mistake: a bare public suffix entry that blocks nothing."""
    out = []
    for entry in sorted(guard.protected):
        if names.is_public_suffix(entry) and entry != "mil" and not cfg.tld_second_level.get(entry):
            out.append(
                f"protected entry {entry} is a public suffix with no known second-level names: it "
                f"blocks nothing; protect registrable domains (example.{entry}) or list names in "
                "[typo] second_level"
            )
    return out


def entry_actions(policy: Policy) -> dict[str, set[str]]:
    """Protected entry -> every action a match under it can get ([typo] domains may name names below mil)."""
    out = {e: {policy.domain_actions.get(e) or policy.typo_action} for e in sorted(policy.guard.protected)}
    for name, action in policy.domain_actions.items():
        entry = next((p for p in names.parents(name) if p in out), None)
        if entry is not None and entry != name:
            out[entry].add(action)
    return out


class PolicyHolder:
    """Holds the policy in force; a reload replaces it in one assignment, or not at all."""

    def __init__(self, cfg: Config, metrics: Metrics, reread: Callable[[], Config] | None = None) -> None:
        self.cfg, self.metrics = cfg, metrics
        self.reread = reread or (lambda: self.cfg)
        self.on_publish: list[Callable[[Policy], None]] = []  # called with each new policy once it is in force
        self.policy = load_policy(cfg)  # at start-up an error propagates: exit 2
        self._declare(self.policy)
        self._published(self.policy)
        self.lock = asyncio.Lock()
        self.last_reload: dict | None = None  # {"time", "ok", "error"} of the last reload, for `status`

    def current(self) -> Policy:
        return self.policy

    def _declare(self, policy: Policy) -> None:
        """Every series the policy can count in, at 0; ConfigError when the tally has no slots left for them."""
        qtypes = [QTYPES.get(q, OTHER_QTYPE) for q in sorted(policy.typo_qtypes)]  # a blocked ANY: declared when seen
        self.metrics.declare_policy(entry_actions(policy), policy.guard.policy, policy.table.rule_count, qtypes)

    def _published(self, policy: Policy) -> None:
        for call in self.on_publish:
            call(policy)
        self.metrics.reloaded(True, dict(policy.table.rule_count), len(policy.guard.protected))
        self.metrics.typo_learned_labels.set(policy.guard.learned_count)
        log.info(
            "policy loaded generation=%d protected=%d override_rules=%d",
            policy.generation,
            len(policy.guard.protected),
            sum(policy.table.rule_count.values()),
        )

    def learn(self, query: Query, reply: bytes) -> None:
        """Learn from a NOERROR reply with answers (mail.dmdc.mil -> dmdc); never from NXDOMAIN or NODATA.

        A new label makes a new policy snapshot (same generation), swapped in like a reload: whoever holds the
        old one (a decision memo, the fast path, the sink thread) sees the change by identity, never by polling.
        """
        if len(reply) < 12 or reply[3] & 0xF != 0 or reply[6:8] == b"\0\0":
            return
        found = self.policy.guard.learn(query.qname)
        if found is None:
            return
        guard, entry, label = found
        self.policy = dataclasses.replace(self.policy, guard=guard)
        learned.append(learned.path_in(self.cfg.state_dir), entry, label)
        self.metrics.typo_learned_labels.set(guard.learned_count)
        log.info("typo label learned entry=%s label=%s", entry, label)

    async def reload(self) -> bool:
        """Parse the new policy off the event loop, then swap it in; on error keep the last good one."""
        async with self.lock:
            try:
                cfg = self.reread()
                policy = await asyncio.to_thread(load_policy, cfg, self.policy.generation + 1)
                self._declare(policy)  # out of tally slots: refused like any bad policy
            except ConfigError as exc:
                log.warning("reload failed, keeping the last good policy: %s", exc)
                self.metrics.reloaded(False)
                self.last_reload = {
                    "time": exceptions_mod.iso(time.time()),
                    "ok": False,
                    "error": str(exc),
                }  # for `status`
                return False
            self.cfg, self.policy = cfg, policy
            self._published(policy)
            self.last_reload = {"time": exceptions_mod.iso(time.time()), "ok": True, "error": None}
            return True

    async def watch(self) -> None:
        """Reload when a file under zones/ or the config file changes.

        Directories are watched, not files: an editor or `sed -i` replaces the config file by a rename,
        and a watch on the old file would see nothing after the first edit.
        """
        from watchfiles import awatch

        zones = os.path.abspath(self.cfg.zones_dir) if self.cfg.zones_dir else None
        config = os.path.abspath(self.cfg.config_path) if self.cfg.config_path else None
        dirs = sorted({d for d in (zones, config and os.path.dirname(config)) if d and os.path.isdir(d)})
        if not dirs:
            return

        def relevant(_change: object, path: str) -> bool:
            return path == config or (zones is not None and os.path.dirname(path) == zones)

        async for _changes in awatch(*dirs, watch_filter=relevant, debounce=200, step=50, recursive=False):
            await self.reload()

    async def start_watching(self) -> asyncio.Task:
        """Start watch() and return once its watches are in place, so that a change made after start-up is seen."""
        task = asyncio.ensure_future(self.watch())
        await asyncio.sleep(0)  # the task runs up to its first thread hop: the inotify watches exist by then
        return task


def reread_config(path: str | None, overrides: dict) -> Callable[[], Config]:
    return lambda: config_mod.load_config(path, overrides)
