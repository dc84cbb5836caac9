"""Settings as frozen dataclasses; load_config() reads TOML, merges command-line flags and raises ConfigError."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .codes import QTYPE_NUMBERS, RATELIMIT_ACTIONS, TYPO_ACTIONS, Action, Qtype, TypoPolicy
from .errors import ConfigError

DEFAULT_LISTEN = ("127.0.0.1:8053", "[::1]:8053")
DEFAULT_ALLOW_CLIENTS = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Config:
    """Everything resolverguard reads at start-up; see README, "Configuration reference"."""

    listen: tuple[Endpoint, ...] = ()
    upstreams: tuple[Endpoint, ...] = ()  # empty: the nameservers of /etc/resolv.conf
    allow_clients: tuple[str, ...] = DEFAULT_ALLOW_CLIENTS
    timeout: float = 1.0  # seconds per upstream try
    servfail_after: float = 2.5  # seconds until SERVFAIL when no upstream answers
    randomize_case: bool = False  # 0x20 case randomisation of upstream queries
    workers: int = 1
    metrics: Endpoint | None = None
    zones_dir: str = "zones"
    protect: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    typo_action: str = Action.NXDOMAIN
    typo_qtypes: tuple[str, ...] = (Qtype.A, Qtype.AAAA, Qtype.MX)
    typo_classes: dict[str, str] = field(default_factory=dict)  # class -> block | log-only
    domain_actions: dict[str, str] = field(default_factory=dict)  # protected domain -> action
    tld_second_level: dict[str, tuple[str, ...]] = field(default_factory=dict)
    state_dir: str = ""  # learned .mil labels are kept here (learned-labels.txt); "" = in memory only
    sink_ipv4: str = "127.0.0.2"
    sink_ipv6: str = ""
    sink_mail_host: str = "sink.resolverguard.internal."
    sink_ttl: int = 60
    cache_entries: int = 100_000
    cache_bytes: int = 64 * 1024 * 1024
    cache_max_ttl: int = 86_400
    cache_min_ttl: int = 0
    servfail_ttl: int = 2
    serve_stale: int = 0  # seconds an expired answer may still be served while upstreams fail (RFC 8767)
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 1000
    max_inflight: int = 10_000
    ratelimit_qps: float = 0.0  # per client; 0 disables
    ratelimit_burst: float = 0.0
    ratelimit_exempt: tuple[str, ...] = ()
    ratelimit_action: str = Action.REFUSED  # refused | drop
    shutdown_grace: float = 3.0
    events: str = "-"  # block event log: "-" for stdout, a path, or "" to disable
    log_level: str = "INFO"
    export_origin: str = "rpz.resolverguard."
    export_clients: tuple[str, ...] = ("127.0.0.0/8", "::1/128")  # who may transfer the export zone; () = off
    export_tsig: dict[str, str] = field(default_factory=dict)  # name, algorithm, secret_file; {} = no TSIG
    export_notify: tuple[Endpoint, ...] = ()  # secondaries sent NOTIFY on every serial change
    export_state_dir: str = ""  # serial and IXFR journal shared by workers; "" = a private temporary directory
    export_journal_versions: int = 20
    config_path: str | None = None


_SCALARS = {f.name: f for f in fields(Config)}
# TOML layout: top-level keys plus [typo], [sink], [cache], [tcp], [ratelimit], [log] tables
_TABLES = {
    "typo": {"action": "typo_action", "qtypes": "typo_qtypes", "classes": "typo_classes",
             "domains": "domain_actions", "second_level": "tld_second_level"},
    "sink": {"ipv4": "sink_ipv4", "ipv6": "sink_ipv6", "mail_host": "sink_mail_host", "ttl": "sink_ttl"},
    "cache": {"entries": "cache_entries", "bytes": "cache_bytes", "max_ttl": "cache_max_ttl",
              "min_ttl": "cache_min_ttl", "servfail_ttl": "servfail_ttl", "serve_stale": "serve_stale"},
    "tcp": {"idle_timeout": "tcp_idle_timeout", "max_connections": "tcp_max_connections"},
    "ratelimit": {"qps": "ratelimit_qps", "burst": "ratelimit_burst", "exempt": "ratelimit_exempt",
                  "action": "ratelimit_action"},
    "log": {"level": "log_level", "events": "events"},
    "export": {"origin": "export_origin", "clients": "export_clients", "tsig": "export_tsig",
               "notify": "export_notify", "state_dir": "export_state_dir", "journal_versions": "export_journal_versions"},
}  # fmt: skip
_TOP = {"listen", "upstreams", "allow_clients", "timeout", "servfail_after", "randomize_case", "workers", "metrics",
        "zones_dir", "protect", "allow", "shutdown_grace", "max_inflight", "state_dir"}  # fmt: skip


def parse_endpoint(text: str, default_port: int = 53) -> Endpoint:
    """HOST, HOST:PORT, [V6] or [V6]:PORT, or a bare IPv6 address."""
    text = str(text).strip()
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text)
    if m:
        host, port = m.group(1), m.group(2)
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, None
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        if host != "localhost":
            raise ConfigError(f"bad address {text!r}: expected an IP address, e.g. 127.0.0.1:8053 or [::1]:8053") from None
    if host == "localhost":
        host = "127.0.0.1"
    try:
        port_no = int(port) if port is not None else default_port
    except ValueError:
        raise ConfigError(f"bad port in {text!r}") from None
    if not 0 <= port_no <= 65535:
        raise ConfigError(f"bad port in {text!r}: must be 0-65535")
    return Endpoint(host, port_no)


def _line_of(text: str, key: str) -> int | None:
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*\"?{re.escape(key)}\"?\s*=", line) or re.match(rf"\s*\[+\s*{re.escape(key)}\s*\]", line):
            return number
    return None


def load_config(path: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read the TOML file (if any), apply command-line overrides, validate; raise ConfigError naming file and line."""
    values: dict[str, Any] = {}
    text = ""
    where = "command line"
    if path:
        where = path
        try:
            text = Path(path).read_text(encoding="utf-8")
            raw = tomllib.loads(text)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            m = re.search(r"\(at line (\d+)", str(exc))
            line = m.group(1) if m else max(1, len(text.splitlines()))
            msg = re.sub(r"\s*\(at (line|end of document).*\)", "", str(exc))
            raise ConfigError(f"{path}:{line}: {msg}") from None
        for key, value in raw.items():
            if key in _TABLES and isinstance(value, dict):
                for sub, sub_value in value.items():
                    if sub not in _TABLES[key]:
                        raise ConfigError(f"{path}:{_line_of(text, sub) or '?'}: unknown key {key}.{sub}")
                    values[_TABLES[key][sub]] = sub_value
            elif key in _TOP:
                values[key] = value
            else:
                raise ConfigError(f"{path}:{_line_of(text, key) or '?'}: unknown key {key!r}")
    for key, value in (overrides or {}).items():
        if value not in (None, [], ()):
            values[key] = value
    try:
        return _build(values, path)
    except ConfigError as exc:
        key = getattr(exc, "key", None)
        file_key = next((sub for table in _TABLES.values() for sub, name in table.items() if name == key), key)
        line = _line_of(text, file_key) if key and text else None
        prefix = f"{where}:{line}" if line else where
        raise ConfigError(f"{prefix}: {exc}") from None


class _KeyError(ConfigError):
    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        super().__init__(f"{key}: {problem}")


def _build(values: dict[str, Any], path: str | None) -> Config:
    out: dict[str, Any] = {"config_path": path}
    for key, value in values.items():
        f = _SCALARS[key]
        try:
            out[key] = _convert(key, f.type, value)
        except ConfigError as exc:
            raise _KeyError(key, str(exc)) from None
    cfg = replace(Config(), **out)
    if not cfg.listen:
        cfg = replace(cfg, listen=tuple(parse_endpoint(x) for x in DEFAULT_LISTEN))
    for key, value, allowed in (
        ("typo_action", cfg.typo_action, TYPO_ACTIONS),
        ("ratelimit_action", cfg.ratelimit_action, RATELIMIT_ACTIONS),
        ("log_level", cfg.log_level.upper(), ("DEBUG", "INFO", "WARNING", "ERROR")),
    ):
        if value not in allowed:
            raise _KeyError(key, f"{value!r} is not one of {', '.join(allowed)}")
    for domain, action in cfg.domain_actions.items():
        if action not in TYPO_ACTIONS:
            raise _KeyError("domains", f"{domain}: action {action!r} is not one of {', '.join(TYPO_ACTIONS)}")
    for cls, mode in cfg.typo_classes.items():
        if mode not in tuple(TypoPolicy):
            raise _KeyError("classes", f"{cls}: {mode!r} is not block or log-only")
    for qtype in cfg.typo_qtypes:
        if qtype.upper() not in QTYPE_NUMBERS:
            raise _KeyError("qtypes", f"unknown query type {qtype!r}")
    for net in (*cfg.allow_clients, *cfg.ratelimit_exempt, *cfg.export_clients):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise _KeyError("allow_clients", f"bad network {net!r}") from None
    for key in ("sink_ipv4", "sink_ipv6"):
        value = getattr(cfg, key)
        if value:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise _KeyError(key.split("_")[1], f"bad address {value!r}") from None
    if cfg.timeout <= 0 or cfg.servfail_after <= 0:
        raise _KeyError("timeout", "timeouts must be positive")
    if cfg.workers < 1:
        raise _KeyError("workers", "must be at least 1")
    if cfg.export_tsig:
        unknown = set(cfg.export_tsig) - {"name", "algorithm", "secret_file"}
        if unknown or not {"name", "secret_file"} <= set(cfg.export_tsig):
            raise _KeyError("export_tsig", "expected { name = ..., algorithm = \"hmac-sha256\", secret_file = ... }")
    if cfg.export_journal_versions < 1:
        raise _KeyError("export_journal_versions", "must be at least 1")
    return cfg


def _convert(key: str, typ: Any, value: Any) -> Any:
    typ = str(typ)
    if key in ("listen", "upstreams", "export_notify"):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ConfigError("expected a list of addresses")
        return tuple(parse_endpoint(x, 53) for x in items)
    if key == "metrics":
        return parse_endpoint(value, 9153) if value else None
    if typ.startswith("tuple"):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(x, str) for x in items):
            raise ConfigError("expected a list of strings")
        return tuple(items)
    if typ.startswith("dict"):
        if not isinstance(value, dict):
            raise ConfigError("expected a table")
        if key == "tld_second_level":
            return {k: tuple(v) for k, v in value.items()}
        return {str(k): str(v) for k, v in value.items()}
    if typ == "bool":
        if not isinstance(value, bool):
            raise ConfigError("expected true or false")
        return value
    if typ in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"expected a number, got {value!r}")
        return int(value) if typ == "int" else float(value)
    if typ == "str" or typ.startswith("str"):
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {value!r}")
        return value
    return value
