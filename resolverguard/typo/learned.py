"""Learned second-level labels of whole-suffix entries (mil): parse, format and the bounded file.

When `mil` is protected, every lookup under .mil that the upstream answers with data (mail.dmdc.mil)
teaches the guard that `dmdc` is a real label, so `dmdc.ml` is blocked from then on. The labels are kept
in `<state_dir>/learned-labels.txt`, one `<entry> <label>` a line, at most MAX_LEARNED lines.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

from resolverguard import names

log = logging.getLogger(__name__)

FILENAME = "learned-labels.txt"
MAX_LEARNED = 10_000  # labels kept in memory and on disk, across all entries; later ones are not learned


def path_in(state_dir: str) -> str | None:
    """The learned-labels file under state_dir, or None when no state directory is configured."""
    return os.path.join(state_dir, FILENAME) if state_dir else None


def parse(text: str) -> dict[str, set[str]]:
    """entry -> labels from the file text; malformed lines are skipped (the file is our own output)."""
    out: dict[str, set[str]] = {}
    count = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or count >= MAX_LEARNED:
            continue
        try:
            entry, label = names.normalise(parts[0]), names.normalise(parts[1])
        except ValueError:
            continue
        if "." in label or label in out.get(entry, ()):
            continue
        out.setdefault(entry, set()).add(label)
        count += 1
    return out


def format_line(entry: str, label: str) -> str:
    """One line of the file."""
    return f"{entry} {label}\n"


def load(path: str | None) -> dict[str, set[str]]:
    """The learned labels in path; empty if there is no path or no file yet (a warning if unreadable)."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            return parse(handle.read(MAX_LEARNED * 140))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("learned labels not loaded path=%s error=%s", path, exc)
        return {}


def append(path: str | None, entry: str, label: str) -> None:
    """Add one learned label to the file (created with its directory); a warning if it cannot be written."""
    if not path:
        return
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(format_line(entry, label))
    except OSError as exc:
        log.warning("learned label not saved path=%s error=%s", path, exc)


def total(learned: Mapping[str, Iterable[str]]) -> int:
    """How many labels are learned, over all entries."""
    return sum(len(set(v)) for v in learned.values())
