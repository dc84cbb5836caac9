"""The block event log: one JSON line per blocked or would-have-blocked lookup, written off the event loop."""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import time

from . import wire
from .codes import QTYPES, Action, Verdict

blocks = logging.getLogger("resolverguard.blocks")
_listener: logging.handlers.QueueListener | None = None


def setup_events(target: str) -> None:
    """Send block events to stdout ("-"), a file path, or nowhere (""); writing happens in a thread."""
    global _listener
    stop_events()
    blocks.handlers.clear()
    blocks.propagate = False
    if not target:
        blocks.disabled = True
        return
    blocks.disabled = False
    sink = logging.StreamHandler(sys.stdout) if target == "-" else logging.FileHandler(target, encoding="utf-8")
    sink.setFormatter(logging.Formatter("%(message)s"))
    q: queue.SimpleQueue = queue.SimpleQueue()
    blocks.addHandler(logging.handlers.QueueHandler(q))
    blocks.setLevel(logging.INFO)
    _listener = logging.handlers.QueueListener(q, sink)
    _listener.start()


def stop_events() -> None:
    """Flush and stop the writer thread (at exit, or before reconfiguring)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


atexit.register(stop_events)


def emit_block(query: wire.Query, decision) -> None:
    """Record one blocked (or, in log-only mode, would-have-blocked) lookup."""
    if blocks.disabled or not blocks.handlers:
        return
    typo, rpz = decision.typo, decision.rpz
    event = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
        "client": query.client,
        "qname": query.qname,
        "qtype": QTYPES.get(query.qtype, str(query.qtype)),
        "transport": "tcp" if query.tcp else "udp",
        "action": Action.LOG_ONLY if decision.outcome == Verdict.LOGGED_TYPO else decision.action,
        "outcome": decision.outcome,
        "protected": typo.protected if typo else None,
        "class": typo.typo_class if typo else None,
        "distance": typo.distance if typo else None,
        "neighbour": typo.neighbour if typo else None,
        "rule": f"{rpz.zone}:{rpz.owner}" if rpz else "typo-detector",
    }
    blocks.info(json.dumps(event, separators=(",", ":")))
