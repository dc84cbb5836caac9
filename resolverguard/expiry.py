"""Exceptions end on time in the running guard: a snapshot without the expired ones replaces the policy."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .exceptions import SOON
from .metrics import Metrics
from .policy import expire
from .reload import PolicyHolder

log = logging.getLogger(__name__)


class ExceptionService:
    """Every second: swap in a snapshot without the expired exceptions (no reload, so a broken zone file cannot
    keep an exception alive; every memo and the export follow the new snapshot), and set the exception gauges."""

    name = "exceptions"

    def __init__(self, holder: PolicyHolder, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self.holder, self.metrics, self.clock = holder, metrics, clock
        self.task: asyncio.Future | None = None

    def tick(self) -> None:
        now = self.clock()
        policy = self.holder.current()
        newer = expire(policy, now)
        if newer is not None and self.holder.current() is policy:
            self.holder.policy = newer  # one assignment, as a reload swaps
            log.info("exceptions expired generation=%d active=%d", newer.generation, len(newer.exceptions.active(now)))
        exceptions = self.holder.current().exceptions
        self.metrics.exceptions_active.set(len(exceptions.active(now)))
        self.metrics.exceptions_expiring.set(exceptions.expiring(now, SOON))

    async def run(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(1.0)

    async def start(self) -> None:
        self.tick()
        self.task = asyncio.ensure_future(self.run())

    async def stop(self, grace: float) -> None:
        if self.task is not None:
            self.task.cancel()
