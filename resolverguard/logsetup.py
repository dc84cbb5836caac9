"""Logging configuration: key=value lines on stderr, one level for the package."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"))
    root = logging.getLogger("resolverguard")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
