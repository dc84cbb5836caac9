"""Publishing the export: rebuild the zone when the policy changes, fix its serial in the journal, NOTIFY.

The zone is rebuilt off the event loop and published to the Journal, which fixes the serial for every
worker and keeps the deltas IXFR answers from; a process that publishes a new serial sends NOTIFY to the
configured secondaries (notify.Notifier). The unsigned AXFR messages of the version in force are rendered
once, when it is published (or, in a worker that did not build it, at the first AXFR), so a transfer
only stamps the query's ID and signs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import dns.name

from ..errors import ResolverGuardError
from ..policy import Policy
from .journal import Journal
from .records import DEFAULT_TTL, Export, Record, build_policy
from .render import axfr_records, zone_messages

log = logging.getLogger(__name__)
POLL_SECONDS = 0.25  # how often the export looks for a new policy to publish


class Publisher:
    """Publishes the policy in force under ``origin``; keeps the unsigned full-zone messages of one serial."""

    def __init__(
        self, origin: dns.name.Name, current: Callable[[], Policy], journal: Journal, notifier: object | None = None
    ) -> None:
        self.origin = origin
        self.current = current
        self.journal = journal
        self.notifier = notifier
        self.ttl = DEFAULT_TTL  # of the last zone this process built
        self.rendered: Policy | None = None
        self.wire: tuple[int, list[bytes]] | None = None  # (serial, unsigned AXFR messages)

    def apex(self, serial: int) -> Export:
        """An empty zone at ``serial``: its SOA and NS records."""
        return Export(self.origin, serial, self.ttl, (), b"")

    def soa(self, serial: int) -> Record:
        return self.apex(serial).apex()[0]

    def full_zone(self, serial: int) -> list[bytes] | None:
        """The unsigned AXFR messages of the journal's current version (``serial``); None if it has none."""
        wire = self.wire
        if wire is not None and wire[0] == serial:
            return wire[1]
        snapshot = self.journal.snapshot_lines()
        if snapshot is None:
            return None
        serial, lines = snapshot
        messages = zone_messages(self.origin, axfr_records(self.apex(serial), (line.split(" ", 3) for line in lines)))
        self.wire = (serial, messages)
        return messages

    async def run(self) -> None:
        """Rebuild and publish the zone whenever the policy changes (checked every POLL_SECONDS)."""
        while True:
            policy = self.current()
            if policy is not self.rendered:
                await self.publish(policy)
            await asyncio.sleep(POLL_SECONDS)

    async def publish(self, policy: Policy) -> None:
        try:
            export = await asyncio.to_thread(build_policy, policy, origin=self.origin.to_text(), serial=0)
            serial, new = await asyncio.to_thread(self._publish, export)
        except ResolverGuardError as exc:  # e.g. a bad export origin: keep serving the previous version
            log.error("rpz export failed origin=%s error=%s", self.origin, exc)
            self.rendered = policy
            return
        except OSError as exc:
            log.error("rpz export journal failed dir=%s error=%s", self.journal.dir, exc)
            return
        self.ttl, self.rendered = export.ttl, policy
        if new:
            log.info("rpz export published origin=%s serial=%d", self.origin.to_text(True), serial)
            if self.notifier is not None:
                self.notifier.changed(serial)

    def _publish(self, export: Export) -> tuple[int, bool]:
        """Journal the zone; render its AXFR messages if it is the version in force (in a thread)."""
        serial, new = self.journal.publish(export.digest, list(export.records))
        if serial == self.journal.serial:
            started = time.perf_counter()
            messages = zone_messages(self.origin, axfr_records(export.with_serial(serial), export.records))
            self.wire = (serial, messages)
            log.info(
                "rpz export transfer rendered serial=%d messages=%d bytes=%d seconds=%.3f",
                serial,
                len(messages),
                sum(map(len, messages)),
                time.perf_counter() - started,
            )
        return serial, new

    def stop(self) -> None:
        if self.notifier is not None:
            self.notifier.stop()
