"""The guard announces "started" only once SIGTERM and SIGINT are handled: a supervisor may stop it at once."""

from __future__ import annotations

import asyncio
import logging
import signal

from resolverguard.app import App
from resolverguard.config import load_config


def test_signal_handlers_are_installed_before_started_is_logged(tmp_path, upstream):
    (tmp_path / "zones").mkdir()
    cfg = load_config(
        None,
        {
            "listen": ("127.0.0.1:0",),
            "upstreams": (upstream.address,),
            "zones_dir": str(tmp_path / "zones"),
            "allow_empty": True,
            "events": "",
        },
    )
    seen: dict[str, object] = {}

    class AtStarted(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("started "):
                seen.update({s.name: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)})

    app_log = logging.getLogger("resolverguard.app")
    handler, level = AtStarted(), app_log.level
    app_log.addHandler(handler)
    app_log.setLevel(logging.INFO)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    async def main() -> None:
        app = App(cfg)
        try:
            await app.start()
        finally:
            await app.stop()
            for s in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().remove_signal_handler(s)

    try:
        asyncio.run(main())
    finally:
        app_log.removeHandler(handler)
        app_log.setLevel(level)
        for s, h in before.items():
            signal.signal(s, h)
    assert seen, "no 'started' line"
    for name, h in seen.items():
        assert h is not before[getattr(signal, name)] and h not in (signal.SIG_DFL, None), (name, h)
