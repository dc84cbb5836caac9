"""Logging configuration: the daemon's own log on stderr, as key=value text or one JSON object per line.

Both formats stamp each line with an ISO 8601 time in the local zone (``2026-12-03T11:28:09.123+00:00``);
the JSON keys are documented in docs/observability.md ("The daemon log").
"""

from __future__ import annotations

import datetime
import json
import logging
import sys

LOG_FORMATS = ("text", "json")


def timestamp(created: float) -> str:
    """ISO 8601 with milliseconds and the UTC offset of the local zone."""
    return datetime.datetime.fromtimestamp(created).astimezone().isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        return timestamp(record.created)


class JsonFormatter(logging.Formatter):
    """{"ts", "level", "logger", "message"[, "exception"]}: one object per line, never a multi-line record."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("resolverguard")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
