"""Settings as one frozen dataclass whose fields are the config schema; load_config() reads TOML and flags.

Each field says where it lives in the TOML file and what it accepts, e.g.
``ratelimit_qps: float = setting("ratelimit.qps", number(ge=0), 0.0)``: adding a key or a whole section
is that one line. Every error names the file, the line and the key as written (``guard.toml:12: [ratelimit]
qps: must be >= 0, got -3``) and is a ConfigError, which the command line turns into exit code 2.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import string
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .codes import QTYPE_NUMBERS, RATELIMIT_ACTIONS, TYPO_ACTIONS, Action, Qtype, SinkMode, TypoClass, TypoPolicy
from .errors import ConfigError

DEFAULT_LISTEN = ("127.0.0.1:8053", "[::1]:8053")
DEFAULT_ALLOW_CLIENTS = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
Check = Callable[[Any], Any]  # a TOML value -> the setting's value; ValueError("problem") when it is wrong


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


# ---------------------------------------------------------------- checks: value in, setting out, or ValueError


def number(
    kind: type = float,
    *,
    ge: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> Check:
    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and isinstance(value, float)):
            raise ValueError(f"expected {'an integer' if kind is int else 'a number'}, got {value!r}")
        for bound, ok, words in (
            (ge, lambda b: value >= b, ">="),
            (gt, lambda b: value > b, ">"),
            (le, lambda b: value <= b, "<="),
            (lt, lambda b: value < b, "<"),
        ):
            if bound is not None and not ok(bound):
                raise ValueError(f"must be {words} {bound:g}, got {value!r}")
        return kind(value)

    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def choice(*allowed: str, fold: Callable[[str], str] = str) -> Check:
    def check(value: Any) -> str:
        if fold(text(value)) not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        return fold(value)

    return check


def listed(item: Check) -> Check:
    """A list (or one string) of items, each checked; a tuple."""

    def check(value: Any) -> tuple:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ValueError(f"expected a list, got {value!r}")
        return tuple(item(x) for x in items)

    return check


def table(key: Check = text, value: Check = text) -> Check:
    def check(raw: Any) -> dict:
        if not isinstance(raw, dict):
            raise ValueError(f"expected a table such as {{ name = ... }}, got {raw!r}")
        out = {}
        for k, v in raw.items():
            try:
                out[key(k)] = value(v)
            except ValueError as exc:
                raise ValueError(f"{k}: {exc}") from None
        return out

    return check


def strict_list(item: Check) -> Check:
    """A list only: a string where a list is expected is an error, never split into letters."""

    def check(value: Any) -> tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f'expected a list such as ["name"], got {value!r}')
        return tuple(item(x) for x in value)

    return check


def domain(value: Any) -> str:
    from .names import normalise  # names pulls in the public suffix list: only when a name is checked

    return normalise(text(value))


def domain_text(value: Any) -> str:
    """A valid domain name, kept as written (a trailing dot stays)."""
    domain(value)
    return value


def network(value: Any) -> str:
    try:
        ipaddress.ip_network(text(value), strict=False)
    except ValueError:
        raise ValueError(f"bad network {value!r}") from None
    return value


def address(value: Any) -> str:
    if text(value):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"bad address {value!r}") from None
    return value


def qtype(value: Any) -> str:
    if text(value).upper() not in QTYPE_NUMBERS:
        raise ValueError(f"unknown query type {value!r}; known: {', '.join(QTYPE_NUMBERS)}")
    return value


def typo_class(value: Any) -> str:
    name = text(value).replace("-", "_")
    if name not in tuple(TypoClass):
        raise ValueError(f"unknown typo class {value!r}; known: {', '.join(TypoClass)}")
    return name


def endpoint(default_port: int) -> Check:
    def check(value: Any) -> Endpoint:
        try:
            return parse_endpoint(text(value), default_port)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    return check


def tsig(value: Any) -> dict[str, str]:
    """[export] tsig = { name = ..., algorithm = "hmac-sha256", secret_file = ... }."""
    out = table()(value)
    if set(out) - {"name", "algorithm", "secret_file"} or not {"name", "secret_file"} <= set(out):
        raise ValueError('expected { name = ..., algorithm = "hmac-sha256", secret_file = ... }')
    return out


SINK_TEMPLATE_FIELDS = ("recipient", "domain", "protected", "typo_class", "suggestion")


def sink_template(value: Any) -> str:
    """The SMTP sink's reply text: one line, only the known {fields}."""
    template = text(value)
    if "\r" in template or "\n" in template:
        raise ValueError("must be one line")
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    if unknown := used - set(SINK_TEMPLATE_FIELDS):
        known = ", ".join(f"{{{f}}}" for f in SINK_TEMPLATE_FIELDS)
        raise ValueError(f"unknown field {{{sorted(unknown)[0]}}}; known: {known}")
    return template


def optional(inner: Check) -> Check:
    return lambda value: inner(value) if value else None


def setting(toml: str, check: Check, default: Any = MISSING, *, factory: Any = MISSING) -> Any:
    """A Config field read from the TOML key `toml` ("key" or "section.key") through `check`."""
    return field(default=default, default_factory=factory, metadata={"toml": toml, "check": check})


@dataclass(frozen=True)
class Config:
    """Everything resolverguard reads at start-up; see README, "Configuration reference"."""

    listen: tuple[Endpoint, ...] = setting("listen", listed(endpoint(53)), ())
    upstreams: tuple[Endpoint, ...] = setting("upstreams", listed(endpoint(53)), ())  # (): /etc/resolv.conf
    allow_clients: tuple[str, ...] = setting("allow_clients", listed(network), DEFAULT_ALLOW_CLIENTS)
    timeout: float = setting("timeout", number(gt=0), 1.0)  # seconds per upstream try
    servfail_after: float = setting("servfail_after", number(gt=0, lt=5), 2.5)  # until SERVFAIL; a stub gives up at 5 s
    randomize_case: bool = setting("randomize_case", boolean, False)  # 0x20 randomisation upstream
    workers: int = setting("workers", number(int, ge=1, le=256), 1)
    metrics: Endpoint | None = setting("metrics", optional(endpoint(9153)), None)
    zones_dir: str = setting("zones_dir", text, "zones")  # relative to the config file (no file: to the cwd)
    allow_empty: bool = setting("allow_empty", boolean, False)  # start (and reload) with no protected domain
    protect: tuple[str, ...] = setting("protect", listed(domain), ())
    allow: tuple[str, ...] = setting("allow", listed(domain), ())
    max_inflight: int = setting("max_inflight", number(int, ge=1), 10_000)
    shutdown_grace: float = setting("shutdown_grace", number(ge=0, le=600), 3.0)
    typo_action: str = setting("typo.action", choice(*TYPO_ACTIONS), Action.NXDOMAIN)
    typo_qtypes: tuple[str, ...] = setting("typo.qtypes", listed(qtype), (Qtype.A, Qtype.AAAA, Qtype.MX))
    typo_classes: dict[str, str] = setting("typo.classes", table(typo_class, choice(*TypoPolicy)), factory=dict)
    domain_actions: dict[str, str] = setting("typo.domains", table(domain, choice(*TYPO_ACTIONS)), factory=dict)
    tld_second_level: dict[str, tuple[str, ...]] = setting(
        "typo.second_level", table(domain, strict_list(domain)), factory=dict
    )
    state_dir: str = setting("state_dir", text, "")  # learned .mil labels (learned-labels.txt); "": memory only
    sink_ipv4: str = setting("sink.ipv4", address, "127.0.0.2")
    sink_ipv6: str = setting("sink.ipv6", address, "")
    sink_mail_host: str = setting("sink.mail_host", domain_text, "sink.resolverguard.internal.")
    sink_ttl: int = setting("sink.ttl", number(int, ge=0, le=86_400), 60)
    smtp_sink_listen: tuple[Endpoint, ...] = setting("smtp_sink.listen", listed(endpoint(25)), ())  # (): no sink
    smtp_sink_mode: str = setting("smtp_sink.mode", choice(*SinkMode), SinkMode.REJECT)  # 5xx now | 4xx queued
    smtp_sink_template: str = setting(
        "smtp_sink.template",
        sink_template,
        "<{recipient}>: {domain} resembles the protected domain {protected} "
        "({typo_class}). Did you mean <{suggestion}>? Not delivered.",
    )
    smtp_sink_hostname: str = setting("smtp_sink.hostname", domain_text, "sink.resolverguard.internal")
    smtp_sink_max_sessions: int = setting("smtp_sink.max_sessions", number(int, ge=1), 1000)
    smtp_sink_command_timeout: float = setting("smtp_sink.command_timeout", number(gt=0), 30.0)  # idle timeout
    smtp_sink_session_timeout: float = setting("smtp_sink.session_timeout", number(gt=0), 120.0)  # whole session
    smtp_sink_max_commands: int = setting("smtp_sink.max_commands", number(int, ge=1), 100)  # per command, then 421
    policy_listen: tuple[Endpoint, ...] = setting("policy.listen", listed(endpoint(10040)), ())  # (): off
    policy_mode: str = setting("policy.mode", choice(*SinkMode), SinkMode.REJECT)  # 5xx now | 4xx to retry
    policy_template: str = setting(
        "policy.template",
        sink_template,
        "{domain} resembles the protected domain {protected} ({typo_class}). Did you mean <{suggestion}>? "
        "Not sent; contact IT if you really mean {domain}.",
    )
    policy_max_connections: int = setting("policy.max_connections", number(int, ge=1), 256)
    policy_idle_timeout: float = setting("policy.idle_timeout", number(gt=0), 330.0)  # > Postfix's max_idle 300 s
    policy_request_timeout: float = setting("policy.request_timeout", number(gt=0), 10.0)  # one whole request
    cache_entries: int = setting("cache.entries", number(int, ge=0), 100_000)
    cache_bytes: int = setting("cache.bytes", number(int, ge=0), 64 * 1024 * 1024)
    cache_max_ttl: int = setting("cache.max_ttl", number(int, ge=0), 86_400)
    cache_min_ttl: int = setting("cache.min_ttl", number(int, ge=0), 0)
    servfail_ttl: int = setting("cache.servfail_ttl", number(int, ge=0, le=300), 2)
    serve_stale: int = setting("cache.serve_stale", number(int, ge=0), 0)  # RFC 8767, seconds past expiry
    tcp_idle_timeout: float = setting("tcp.idle_timeout", number(gt=0), 10.0)
    tcp_max_connections: int = setting("tcp.max_connections", number(int, ge=1), 1000)
    ratelimit_qps: float = setting("ratelimit.qps", number(ge=0), 0.0)  # per client; 0 disables
    ratelimit_burst: float = setting("ratelimit.burst", number(ge=0), 0.0)
    ratelimit_exempt: tuple[str, ...] = setting("ratelimit.exempt", listed(network), ())
    ratelimit_action: str = setting("ratelimit.action", choice(*RATELIMIT_ACTIONS), Action.REFUSED)
    log_level: str = setting("log.level", choice(*LOG_LEVELS, fold=str.upper), "INFO")
    log_format: str = setting("log.format", choice("text", "json", fold=str.lower), "text")  # the daemon's own log
    events: str = setting("log.events", text, "-")  # block event log: "-" stdout, a path, or "" off
    export_origin: str = setting("export.origin", domain_text, "rpz.resolverguard.")
    export_clients: tuple[str, ...] = setting("export.clients", listed(network), ("127.0.0.0/8", "::1/128"))
    export_tsig: dict[str, str] = setting("export.tsig", tsig, factory=dict)  # {} = no TSIG
    export_notify: tuple[Endpoint, ...] = setting("export.notify", listed(endpoint(53)), ())  # sent NOTIFY
    export_state_dir: str = setting("export.state_dir", text, "")  # serial and IXFR journal; "": a temporary dir
    export_journal_versions: int = setting("export.journal_versions", number(int, ge=1), 20)
    control_socket: str = setting("control.socket", text, "")  # "": per config file in /run/resolverguard; "off"
    config_path: str | None = None
    locations: Mapping[str, str] = field(default_factory=dict, compare=False)  # field -> "file:line"
    overridden: tuple[str, ...] = field(default=(), compare=False)  # file keys a flag replaced, for a WARNING

    def export_dir(self) -> str:
        """Where the export keeps its serial and journal: [export] state_dir, else <state_dir>/export; "" = none."""
        return self.export_state_dir or (str(Path(self.state_dir) / "export") if self.state_dir else "")

    def where(self, name: str) -> str:
        """Where the value of field `name` was set: "file:line: [section] key", or the key alone."""
        return self.locations.get(name) or _written(_SCHEMA[name].metadata["toml"])


_SCHEMA = {f.name: f for f in fields(Config) if "toml" in f.metadata}
_BY_TOML = {f.metadata["toml"]: f.name for f in _SCHEMA.values()}
_SECTIONS = {toml.split(".")[0] for toml in _BY_TOML if "." in toml}


def _written(toml: str) -> str:
    """A key as the operator writes it: "[ratelimit] qps" or "timeout"."""
    section, _, key = toml.rpartition(".")
    return f"[{section}] {key}" if section else key


def _cross_checks(cfg: Config) -> None:
    """Rules between keys; each names the key to change."""
    if cfg.timeout > cfg.servfail_after:
        raise _Bad("timeout", f"{cfg.timeout:g} s per try exceeds servfail_after ({cfg.servfail_after:g} s)")
    if cfg.cache_min_ttl > cfg.cache_max_ttl:
        raise _Bad("cache_min_ttl", f"{cfg.cache_min_ttl} exceeds [cache] max_ttl ({cfg.cache_max_ttl})")
    try:
        refuse_forwarding_loop(cfg.listen, cfg.upstreams)
    except ConfigError as exc:
        raise _Bad("upstreams", str(exc)) from None
    for name in ("upstreams", "export_notify"):  # port 0 is for listening ("any free port"), never a destination
        if zero := [str(ep) for ep in getattr(cfg, name) if ep.port == 0]:
            raise _Bad(name, f"port 0 in {zero[0]}: give the port the server listens on (53 if omitted)")
    if cfg.export_tsig:
        problem = tsig_problem(cfg.export_tsig)
        if problem:
            raise _Bad("export_tsig", problem)


def refuse_forwarding_loop(listen: Iterable[Endpoint], upstreams: Iterable[Endpoint]) -> None:
    """An upstream that is one of our own listen addresses would send every query back to us, forever."""
    for up in upstreams:
        for ep in listen:
            if up.port == ep.port and _same_host(ep.host, up.host):
                raise ConfigError(
                    f"upstream {up} would conflict with this guard's own listen address {ep} (a forwarding loop; "
                    "/etc/resolv.conf points at the guard?): give other upstreams"
                )


def _same_host(listen_host: str, host: str) -> bool:
    """Does a socket bound to listen_host receive what is sent to host? (0.0.0.0: every local IPv4 address.)"""
    a, b = ipaddress.ip_address(listen_host.split("%")[0]), ipaddress.ip_address(host.split("%")[0])
    if a == b:
        return True
    if not a.is_unspecified or a.version != b.version:
        return False
    if b.is_loopback or b.is_unspecified:
        return True
    with socket.socket(socket.AF_INET6 if b.version == 6 else socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, 0))  # only an address of this host can be bound
        except OSError:
            return False
    return True


TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1")  # RFC 8945 §6


def tsig_problem(tsig: Mapping[str, str]) -> str | None:
    """What `serve` would refuse in [export] tsig (algorithm, secret file, its mode, its text), or None."""
    import base64
    import binascii
    import os
    import stat

    algorithm = tsig.get("algorithm", "hmac-sha256")
    if algorithm.lower().rstrip(".") not in TSIG_ALGORITHMS:
        return f"algorithm {algorithm!r} is not one of {', '.join(TSIG_ALGORITHMS)}"
    path = tsig["secret_file"]
    try:
        mode = os.stat(path).st_mode
        with open(path, encoding="ascii") as fh:
            secret = fh.read().strip()
    except OSError as exc:
        return f"cannot read the secret file {path}: {exc.strerror or exc}"
    except UnicodeDecodeError:
        return f"secret file {path} is not base64 text"
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"secret file {path} is readable by group or others (mode {stat.S_IMODE(mode):o}); chmod 600 it"
    try:
        if not base64.b64decode(secret, validate=True):
            return f"secret file {path} is empty"
    except (binascii.Error, ValueError):
        return f"secret file {path} is not base64 text"
    return None


class _Bad(ConfigError):
    def __init__(self, name: str, problem: str) -> None:
        self.name, self.problem = name, problem
        super().__init__(problem)


def parse_endpoint(text: str, default_port: int = 53) -> Endpoint:
    """HOST, HOST:PORT, [V6] or [V6]:PORT, or a bare IPv6 address (never one that could end in a port)."""
    text = str(text).strip()
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text)
    if m:
        host, port = m.group(1), m.group(2)
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, None
        head, _, tail = text.rpartition(":")
        if tail.isdigit() and _is_ip(head):  # ::1:53 is an address, but was [::1]:53 meant?
            raise ConfigError(f"ambiguous address {text!r}: write [{head}]:{tail} for port {tail}, or [{text}]")
    if not _is_ip(host) and host != "localhost":
        raise ConfigError(f"bad address {text!r}: expected an IP address, e.g. 127.0.0.1:8053 or [::1]:8053")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        port_no = int(port) if port is not None else default_port
    except ValueError:
        raise ConfigError(f"bad port in {text!r}") from None
    if not 0 <= port_no <= 65535:
        raise ConfigError(f"bad port in {text!r}: must be 0-65535")
    return Endpoint(host, port_no)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


def key_lines(text: str) -> dict[str, int]:
    """TOML key ("section.key", or "section" for its header) -> line number, tracking [section] headers."""
    lines: dict[str, int] = {}
    section = ""
    for number, line in enumerate(text.splitlines(), 1):
        if m := re.match(r"\s*\[+\s*([\w.\-\"]+)\s*\]", line):
            section = m[1].strip('"')
            lines.setdefault(section, number)
        elif m := re.match(r"\s*\"?([\w.\-]+)\"?\s*=", line):
            lines.setdefault(f"{section}.{m[1]}" if section else m[1], number)
    return lines


def _read(path: str) -> tuple[dict, dict[str, int]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+)", str(exc))
        line = m.group(1) if m else max(1, len(text.splitlines()))
        msg = re.sub(r"\s*\(at (line|end of document).*\)", "", str(exc))
        raise ConfigError(f"{path}:{line}: {msg}") from None
    return raw, key_lines(text)


def _flatten(raw: dict, path: str, lines: dict[str, int]) -> dict[str, Any]:
    """TOML document -> {toml key: value}; unknown keys and sections are errors."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}:{lines.get(key, '?')}: {key}: expected a [{key}] section")
            for sub, sub_value in value.items():
                toml = f"{key}.{sub}"
                if toml not in _BY_TOML:
                    known = ", ".join(t.split(".", 1)[1] for t in _BY_TOML if t.startswith(key + "."))
                    raise ConfigError(
                        f"{path}:{lines.get(toml, lines.get(key, '?'))}: unknown key {_written(toml)} (known: {known})"
                    )
                out[toml] = sub_value
        elif key in _BY_TOML:
            out[key] = value
        else:
            raise ConfigError(f"{path}:{lines.get(key, '?')}: unknown key {key!r}")
    return out


def load_config(path: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read the TOML file (if any), apply command-line overrides (by field name), check every value.

    Raises ConfigError naming file, line and key ("command line" for flags).
    """
    values: dict[str, Any] = {}
    locations: dict[str, str] = {}
    if path:
        raw, lines = _read(path)
        for toml, value in _flatten(raw, path, lines).items():
            name = _BY_TOML[toml]
            values[name] = value
            line = lines.get(toml) or lines.get(toml.split(".")[0])
            locations[name] = f"{path}:{line or '?'}: {_written(toml)}"
    if path and not Path(values.get("zones_dir", "zones")).is_absolute():  # the file's zones/ wherever we run
        values["zones_dir"] = str(Path(path).parent / values.get("zones_dir", "zones"))
    overridden = []
    for name, value in (overrides or {}).items():
        if value is not None and value is not False and value not in ([], ()):  # flags not given
            if name in locations:
                overridden.append(f"{name} from the command line, not {locations[name]}")
            values[name] = value
            locations[name] = f"command line: {name}"
    out: dict[str, Any] = {}
    for name, value in values.items():
        try:
            out[name] = _SCHEMA[name].metadata["check"](value)
        except ValueError as exc:
            raise ConfigError(f"{locations.get(name) or _written(name)}: {exc}") from None
    cfg = replace(Config(), **out, config_path=path, locations=locations, overridden=tuple(overridden))
    if not cfg.listen:
        cfg = replace(cfg, listen=tuple(parse_endpoint(x) for x in DEFAULT_LISTEN))
    try:
        _cross_checks(cfg)
    except _Bad as exc:
        raise ConfigError(f"{cfg.where(exc.name)}: {exc.problem}") from None
    return cfg
