"""Build the Policy from config and zones/, swap it atomically, and reload on SIGHUP or file changes."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from . import config as config_mod
from .config import QTYPE_NUMBERS, Config
from .errors import ConfigError
from .metrics import QTYPES, Metrics
from .policy import Policy
from .rpz import PolicyTable, load_zone_dir
from .typo import TYPO_CLASSES, TypoGuard, learned, load_domain_list

log = logging.getLogger(__name__)


def policy_files(cfg: Config) -> dict[str, list[Path]]:
    """The files under zones/ by kind: *.rpz override zones, *.protect and *.allow domain lists."""
    root = Path(cfg.zones_dir)
    if not root.is_dir():
        return {"rpz": [], "protect": [], "allow": []}
    return {kind: sorted(root.glob(f"*.{kind}")) for kind in ("rpz", "protect", "allow")}


def load_policy(cfg: Config, generation: int = 0) -> Policy:
    """Parse and validate everything that decides; raises ConfigError (naming file and line) on any error."""
    if cfg.zones_dir and not Path(cfg.zones_dir).is_dir():
        log.warning("zones directory missing zones_dir=%s", cfg.zones_dir)
    files = policy_files(cfg)
    protect = list(cfg.protect)
    allow = list(cfg.allow)
    for path in files["protect"]:
        protect += load_domain_list(path)
    for path in files["allow"]:
        allow += load_domain_list(path)
    zones = load_zone_dir(cfg.zones_dir) if files["rpz"] else []
    unknown = set(cfg.typo_classes) - set(TYPO_CLASSES)
    if unknown:
        raise ConfigError(f"{cfg.config_path or 'config'}: unknown typo class {sorted(unknown)[0]!r}; known: "
                          + ", ".join(TYPO_CLASSES))  # fmt: skip
    try:
        guard = TypoGuard.build(protect, allow, class_policy=cfg.typo_classes,
                                tld_second_level=cfg.tld_second_level or None,
                                learned=learned.load(learned.path_in(cfg.state_dir)))  # fmt: skip
    except ValueError as exc:
        raise ConfigError(f"{cfg.config_path or 'config'}: {exc}") from None
    return Policy(
        table=PolicyTable(zones),
        guard=guard,
        typo_action=cfg.typo_action,
        domain_actions=dict(cfg.domain_actions),
        typo_qtypes=frozenset(QTYPE_NUMBERS[t.upper()] for t in cfg.typo_qtypes),
        generation=generation,
    )


class PolicyHolder:
    """Holds the policy in force; a reload replaces it in one assignment, or not at all."""

    def __init__(self, cfg: Config, metrics: Metrics, reread: Callable[[], Config] | None = None) -> None:
        self.cfg, self.metrics = cfg, metrics
        self.reread = reread or (lambda: self.cfg)
        self.policy = load_policy(cfg)  # at start-up an error propagates: exit 2
        self._published(self.policy)
        self.lock = asyncio.Lock()

    def current(self) -> Policy:
        return self.policy

    def _published(self, policy: Policy) -> None:
        actions = {policy.typo_action, *policy.domain_actions.values()}
        qtypes = [QTYPES.get(q, "other") for q in sorted(policy.typo_qtypes)]
        self.metrics.declare_policy(sorted(policy.guard.protected), TYPO_CLASSES, policy.table.rule_count,
                                    sorted(actions), qtypes)  # fmt: skip
        self.metrics.reloaded(True, dict(policy.table.rule_count), len(policy.guard.protected))
        self.metrics.typo_learned_labels.set(policy.guard.learned_count)
        log.info("policy loaded generation=%d protected=%d override_rules=%d", policy.generation,
                 len(policy.guard.protected), sum(policy.table.rule_count.values()))  # fmt: skip

    async def reload(self) -> bool:
        """Parse the new policy off the event loop, then swap it in; on error keep the last good one."""
        async with self.lock:
            try:
                cfg = self.reread()
                policy = await asyncio.to_thread(load_policy, cfg, self.policy.generation + 1)
            except ConfigError as exc:
                log.warning("reload failed, keeping the last good policy: %s", exc)
                self.metrics.reloaded(False)
                return False
            self.cfg, self.policy = cfg, policy
            self._published(policy)
            return True

    async def watch(self) -> None:
        """Reload when a file under zones/ or the config file changes."""
        from watchfiles import awatch

        paths = [p for p in (self.cfg.zones_dir, self.cfg.config_path) if p and os.path.exists(p)]
        if not paths:
            return
        async for _changes in awatch(*paths, debounce=200, step=50, recursive=False):
            await self.reload()


def reread_config(path: str | None, overrides: dict) -> Callable[[], Config]:
    return lambda: config_mod.load_config(path, overrides)
