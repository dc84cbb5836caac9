"""The export zone's versions on disk: serial, the current records, and the deltas of the last N versions.

One directory (``[export] state_dir``) shared by every worker, so they all answer SOA, IXFR and AXFR
for the same serial: the first process that builds a new content publishes it under an exclusive
lock (fcntl.flock), every file is written whole and swapped in with os.replace, and a process that
builds content already published (or an older version still in the journal) gets that serial back.

Files: ``state.json`` (serial, content digest, the versions kept), ``snapshot`` (the current records,
one per line), ``delta-<old>-<new>`` (RFC 1995 difference: ``-record`` and ``+record`` lines),
``notify.json`` (last serial each secondary acknowledged). At most ``keep`` deltas are kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from .export import Record

log = logging.getLogger(__name__)
DEFAULT_KEEP = 20


class Delta(NamedTuple):
    old: int
    new: int
    removed: list[Record]
    added: list[Record]


def _record(line: str) -> Record:
    owner, ttl, rdtype, rdata = line.split(" ", 3)
    return Record(owner, int(ttl), rdtype, rdata)


def _write(path: Path, lines: Iterable[str]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line)
            fh.write("\n")
    os.replace(tmp, path)


class Journal:
    """Publishes export versions and answers "what changed since serial S"; see the module docstring."""

    def __init__(self, directory: str | Path, keep: int = DEFAULT_KEEP, clock: Callable[[], float] = time.time) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep = max(1, keep)
        self.clock = clock
        self._cached: tuple[int, dict] | None = None  # (state.json mtime_ns, its content)
        self._snapshot: tuple[int, list[Record]] | None = None  # (serial, records)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.dir / "lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def state(self) -> dict:
        """state.json: {"serial", "digest", "versions": [{"serial", "digest"}, ...]}; {} before the first."""
        path = self.dir / "state.json"
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        if self._cached is None or self._cached[0] != mtime:
            try:
                self._cached = (mtime, json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                return {}
        return self._cached[1]

    @property
    def serial(self) -> int | None:
        return self.state().get("serial")

    def publish(self, digest: bytes, records: Iterable[Record]) -> tuple[int, bool]:
        """The serial of this content, and whether this call made it the new current version."""
        with self._locked():
            self._cached = None
            state = self.state()
            for version in reversed(state.get("versions", [])):
                if version["digest"] == digest.hex():
                    return version["serial"], False
            previous = state.get("serial")
            serial = max((previous or 0) + 1, int(self.clock())) % 2**32 or 1
            lines = [r.line() for r in records]
            versions = list(state.get("versions", []))
            if previous is not None:
                old = set(self._lines(self.dir / "snapshot"))
                new = set(lines)
                removed = sorted(old - new)
                added = sorted(new - old)
                _write(
                    self.dir / f"delta-{previous}-{serial}", [*("-" + r for r in removed), *("+" + a for a in added)]
                )
                log.info(
                    "export journal delta old_serial=%d serial=%d removed=%d added=%d",
                    previous,
                    serial,
                    len(removed),
                    len(added),
                )
            _write(self.dir / "snapshot", lines)
            versions.append({"serial": serial, "digest": digest.hex()})
            for gone in versions[: -self.keep - 1]:
                nxt = versions[versions.index(gone) + 1]["serial"]
                with contextlib.suppress(FileNotFoundError):
                    (self.dir / f"delta-{gone['serial']}-{nxt}").unlink()
            versions = versions[-self.keep - 1 :]
            _write(
                self.dir / "state.json", [json.dumps({"serial": serial, "digest": digest.hex(), "versions": versions})]
            )
            self._cached = None
            return serial, True

    def snapshot(self) -> tuple[int, list[Record]] | None:
        """The current serial and records as published (cached until the serial changes)."""
        serial = self.serial
        if serial is None:
            return None
        if self._snapshot is None or self._snapshot[0] != serial:
            with self._locked():  # only to pair the serial with its file: opened here, read and parsed unlocked
                serial = self.serial
                try:
                    fh = open(self.dir / "snapshot", encoding="utf-8")  # noqa: SIM115 (closed below)
                except FileNotFoundError:
                    fh = None
            with contextlib.closing(fh) if fh else contextlib.nullcontext():
                lines = fh.read().splitlines() if fh else []  # a publish replaces the file, never this open one
            self._snapshot = (serial, [_record(line) for line in lines])
        return self._snapshot

    def deltas(self, since: int) -> list[Delta] | None:
        """The changes from serial ``since`` to the current one, oldest first; None if ``since`` is not kept."""
        versions = [v["serial"] for v in self.state().get("versions", [])]
        if since not in versions:
            return None
        chain = versions[versions.index(since) :]
        out = []
        for old, new in zip(chain, chain[1:]):
            try:
                lines = self._lines(self.dir / f"delta-{old}-{new}")
            except FileNotFoundError:
                return None
            out.append(
                Delta(
                    old,
                    new,
                    [_record(x[1:]) for x in lines if x[0] == "-"],
                    [_record(x[1:]) for x in lines if x[0] == "+"],
                )
            )
        return out

    def acknowledged(self, secondary: str, serial: int | None = None) -> dict[str, int]:
        """Record that ``secondary`` acknowledged ``serial`` (if given); the acknowledged serials by secondary."""
        path = self.dir / "notify.json"
        with self._locked():
            try:
                acks = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                acks = {}
            if serial is not None:
                acks[secondary] = serial
                _write(path, [json.dumps(acks)])
        return acks

    @staticmethod
    def _lines(path: Path) -> list[str]:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().splitlines()
        except FileNotFoundError:
            if path.name == "snapshot":
                return []
            raise
