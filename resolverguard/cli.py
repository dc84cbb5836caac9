"""Command line: argv → load_config → setup_logging → run; no DNS logic here."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
from typing import Any

from . import __version__
from .codes import Verdict
from .config import Config, Endpoint, load_config, refuse_forwarding_loop
from .errors import ConfigError, ResolverGuardError

log = logging.getLogger(__name__)
DEFAULT_CONFIG = "/etc/resolverguard/guard.toml"  # read when present and no --config is given
CONFIG_ENV = "RESOLVERGUARD_CONFIG"  # set: the default config file instead (empty: none; the tests set it so)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        sys.stderr.write(f"resolverguard: error: {message} (see --help)\n")
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="resolverguard", description="DNS-layer guard against typo-neighbours of protected domains")
    p.add_argument("--version", action="version", version=f"resolverguard {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--config", "-c", metavar="FILE", help=f"TOML config file (default: {DEFAULT_CONFIG} if present)"
        )
        sp.add_argument(
            "--zones",
            dest="zones_dir",
            metavar="DIR",
            help="zone and list directory (default: zones, next to the config file)",
        )
        sp.add_argument(
            "--allow-empty",
            dest="allow_empty",
            action="store_true",
            help="run even when no domain is protected (otherwise exit 2)",
        )
        sp.add_argument("--protect", action="append", default=[], metavar="DOMAIN", help="protected domain (repeat)")
        sp.add_argument("--allow", action="append", default=[], metavar="DOMAIN", help="never block (repeat)")

    s = sub.add_parser("serve", help="run the guard")
    common(s)
    s.add_argument(
        "--listen",
        "-l",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="listen on UDP and TCP (repeat; default 127.0.0.1:8053 and [::1]:8053)",
    )
    s.add_argument(
        "--upstream",
        "-u",
        dest="upstreams",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="upstream resolver (repeat; default: /etc/resolv.conf)",
    )
    s.add_argument(
        "--policy-listen",
        dest="policy_listen",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="answer Postfix policy delegation (check_policy_service) there (repeat; default off)",
    )
    s.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics at /metrics")
    s.add_argument("--workers", type=int, metavar="N", help="processes sharing the sockets (SO_REUSEPORT)")
    s.add_argument(
        "--log-level", dest="log_level", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="any case"
    )
    s.add_argument(
        "--log-format", dest="log_format", type=str.lower, choices=["text", "json"], help="the daemon log on stderr"
    )
    s.add_argument("--events", metavar="FILE", help='block event log: "-" stdout (default), a file, "" off')

    c = sub.add_parser("check", help="would this name be blocked? exit 0 allowed, 1 blocked")
    common(c)
    c.add_argument("name")
    c.add_argument("--qtype", default="A")
    c.add_argument("--json", action="store_true")

    n = sub.add_parser("neighbours", help="enumerate the typo-neighbours of a domain, per class")
    n.add_argument("domain")
    n.add_argument("--json", action="store_true")
    n.add_argument("--real", action="store_true", help="list real domains near it: allowed or would-block, and why")

    lint = sub.add_parser("lint", help="check config, lists and zones; exit 2 on any error")
    common(lint)

    st = sub.add_parser("status", help="ask the running guard how it is: exit 0 serving, 1 degraded, 2 unreachable")
    st.add_argument(
        "--config", "-c", metavar="FILE", help=f"the config file it was started with (default: {DEFAULT_CONFIG})"
    )
    st.add_argument("--json", action="store_true", help="one JSON object: {socket: status of each worker}")
    rl = sub.add_parser("reload", help="reload the running guard's policy and wait: exit 0 done, 1 refused")
    rl.add_argument(
        "--config", "-c", metavar="FILE", help=f"the config file it was started with (default: {DEFAULT_CONFIG})"
    )

    e = sub.add_parser("export-rpz", help="write the effective policy as one RPZ zone")
    common(e)
    e.add_argument("-o", "--output", metavar="FILE", help="output file (default stdout)")
    e.add_argument("--check-secondary", metavar="HOST[:PORT]", help="compare a secondary's SOA serial with the guard's")
    e.add_argument(
        "--listen",
        "-l",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="with --check-secondary: the running guard (default: the config's first listen address)",
    )
    x = sub.add_parser("exceptions", help="exceptions with an owner, a reason and an expiry (zones/exceptions.toml)")
    xs = x.add_subparsers(dest="action", required=True, parser_class=_Parser)
    xa = xs.add_parser("add", help="let NAME (and names below it) through until WHEN")
    common(xa)
    xa.add_argument("name", metavar="NAME")
    xa.add_argument("--owner", help="who asked (person, team, ticket)")
    xa.add_argument("--reason", help="why")
    xa.add_argument("--until", metavar="WHEN", help="ISO 8601 date (end of that day, UTC) or date-time")
    xa.add_argument(
        "--sender",
        dest="senders",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="only for this envelope sender or SASL user, in the policy service (repeat)",
    )
    xa.add_argument("--replace", action="store_true", help="replace an exception of the same name")
    xl = xs.add_parser("list", help="list the exceptions (expired ones marked)")
    common(xl)
    xl.add_argument("--json", action="store_true")
    xr = xs.add_parser("remove", help="remove the exception NAME")
    common(xr)
    xr.add_argument("name", metavar="NAME")
    return p


_CONFIG_KEYS = (
    "listen",
    "upstreams",
    "metrics",
    "workers",
    "log_level",
    "log_format",
    "events",
    "zones_dir",
    "protect",
    "allow",
    "allow_empty",
    "policy_listen",
)


def _config(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {k: getattr(args, k) for k in _CONFIG_KEYS if hasattr(args, k)}
    if overrides.get("protect"):
        overrides["protect"] = tuple(overrides["protect"])
    if overrides.get("allow"):
        overrides["allow"] = tuple(overrides["allow"])
    return load_config(_config_path(args), overrides)


def _config_path(args: argparse.Namespace) -> str | None:
    if not hasattr(args, "config"):
        return None
    if args.config:
        return args.config
    default = os.environ.get(CONFIG_ENV, DEFAULT_CONFIG)
    return default if default and os.path.exists(default) else None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = _config(args)
        if args.command == "serve":
            return serve(cfg, args)
        commands = {"check": check, "neighbours": neighbours, "lint": lint, "export-rpz": export_rpz}
        commands["exceptions"] = exceptions_command
        commands.update(status=status, reload=reload)
        code = commands[args.command](cfg, args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except ResolverGuardError as exc:
        sys.stderr.write(f"resolverguard: error: {exc}\n")
        return 2
    except BrokenPipeError:  # `... | head`: the reader has what it wanted; exit as a tool killed by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        return 130


def check(cfg: Config, args: argparse.Namespace) -> int:
    from . import names as names_mod
    from .config import QTYPE_NUMBERS
    from .reload import load_policy

    qtype = QTYPE_NUMBERS.get(args.qtype.upper())
    if qtype is None:
        raise ConfigError(f"unknown query type {args.qtype!r}")
    try:  # the text the server would see for this query: lowercase, IDNA, escaped, no trailing dot
        name = names_mod.query_text(args.name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not name or re.search(r"[\s/:@]", args.name):  # the root, a URL, an address, words: not a domain name
        raise ConfigError(f"not a domain name: {args.name!r} (no spaces, '/', ':' or '@'; not the root)")
    policy = load_policy(cfg)
    decision = policy.decide(name, qtype, None)
    blocked = decision.action != "forward"
    m, hit = decision.typo, decision.rpz
    result = {
        "name": name,
        "verdict": "blocked" if blocked else ("log-only" if decision.outcome == Verdict.LOGGED_TYPO else "allowed"),
        "action": decision.action,
        "protected": m.protected if m else None,
        "class": m.typo_class if m else None,
        "distance": m.distance if m else None,
        "rule": f"rpz {hit.zone} {hit.owner} ({hit.action})" if hit else ("typo-detector" if m else None),
        "neighbour": m.neighbour if m else None,
        "learned": m.learned if m else None,  # the protected label was learned from upstream answers
        "reason": decision.reason or None,
    }
    granted = policy.exceptions.for_domain(name, _now()) if hit and hit.zone == "exceptions" else None
    if granted is not None:  # let through by an exception: say whose, until when and why
        result["reason"] = result["exception"] = granted.describe()
    if args.json:
        print(json.dumps(result))
    elif granted is not None:
        print(f"{name}: allowed ({granted.describe()})")
    else:
        learned = f" [label {m.protected.split('.', 1)[0]} learned from upstream answers]" if m and m.learned else ""
        print(
            f"{name}: {result['verdict']}"
            + (f" ({result['action']}): {result['reason']}" if result["reason"] else "")
            + learned
        )
    return 1 if blocked else 0


def neighbours(cfg: Config, args: argparse.Namespace) -> int:
    from .typo import neighbours as enumerate_neighbours

    if args.real:
        return _real_neighbours(args)
    try:
        found = enumerate_neighbours(args.domain)
    except ValueError as exc:  # not a domain name: one line, exit 2
        raise ConfigError(str(exc)) from None
    if args.json:
        print(json.dumps(found, indent=1))
    else:
        for cls, names in found.items():
            for name in names:
                print(f"{cls}\t{name}")
    return 0


def _real_neighbours(args: argparse.Namespace) -> int:
    """`neighbours DOMAIN --real`: the operator preview (typo/preview.py)."""
    from .typo.preview import real_neighbours

    try:
        rows = real_neighbours(args.domain)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.json:
        print(json.dumps([row.__dict__ for row in rows], indent=1))
    else:
        for row in rows:
            print(row.line())
    return 0


def lint(cfg: Config, args: argparse.Namespace) -> int:
    from .reload import load_policy, policy_files, policy_warnings

    printed: dict[str, None] = {}  # in order, each once
    logged: list[logging.LogRecord] = []
    catch = logging.Handler(logging.WARNING)
    catch.emit = logged.append  # type: ignore[method-assign]  # lint prints each warning once, on stdout
    package = logging.getLogger("resolverguard")
    package.addHandler(catch)
    try:
        policy = load_policy(cfg)  # an error: one line, exit 2, like every user error
    finally:
        package.removeHandler(catch)
    files = policy_files(cfg)
    for zone in policy.table.zones:
        printed.update(dict.fromkeys(getattr(zone, "warnings", ())))
    printed.update(dict.fromkeys(policy_warnings(cfg, policy.guard)))
    for warning in printed:
        print(f"warning: {warning}")
    for entry in policy.exceptions.entries:
        if not entry.active(_now()):
            print(
                f"warning: {policy.exceptions.path}:{entry.line}: exception {entry.name} expired {entry.until_text()}"
            )
    for record in logged:  # what else the load warned about (e.g. unreadable learned labels), not said above
        message = record.getMessage()
        if message not in printed and not any(w in message for w in printed):
            print(f"warning: {message}")
    print(
        f"ok: config {cfg.config_path or '(defaults)'}, {len(files['rpz'])} zones "
        f"({sum(policy.table.rule_count.values())} rules), {len(policy.guard.protected)} protected domains"
    )
    return 0


def _control_sockets(cfg: Config) -> tuple[str, list[str]]:
    from .control import control_path, worker_paths

    path = control_path(cfg)
    if path is None:
        raise ConfigError("no control socket: give --config FILE (the one the guard runs with), or [control] socket")
    return path, worker_paths(path)


def status(cfg: Config, args: argparse.Namespace) -> int:
    """unbound-control status: every worker's status; exit 0 serving, 1 degraded, 2 unreachable."""
    from .control import ask, exit_code, render

    path, sockets = _control_sockets(cfg)
    statuses = [ask(p, "status") for p in sockets] or [{"unreachable": "no such socket (not running?)", "socket": path}]
    if args.json:
        print(json.dumps({s.get("socket") or p: s for p, s in zip(sockets or [path], statuses)}, indent=1))
    else:
        print(render(statuses))
    return exit_code(statuses)


def reload(cfg: Config, args: argparse.Namespace) -> int:
    """unbound-control reload: every worker rereads config and zones; exit 0 all took it, 1 refused, 2 unreachable."""
    from .control import ask

    path, sockets = _control_sockets(cfg)
    if not sockets:
        sys.stderr.write(f"resolverguard: error: cannot reach the guard at {path}: no such socket (not running?)\n")
        return 2
    worst, refused = 0, set()
    for p in sockets:
        reply = ask(p, "reload")
        if "unreachable" in reply or "ok" not in reply:
            sys.stderr.write(
                f"resolverguard: error: cannot reach the guard at {p}: {reply.get('unreachable') or reply}\n"
            )
            worst = 2
        elif not reply["ok"]:
            if reply["error"] not in refused:  # every worker refuses the same files: say it once
                sys.stderr.write(
                    f"resolverguard: error: reload refused, the last good policy stays: {reply['error']}\n"
                )
            refused.add(reply["error"])
            worst = max(worst, 1)
        else:
            print(f"reloaded: {p} generation {reply['generation']}")
    return worst


def export_rpz(cfg: Config, args: argparse.Namespace) -> int:
    from .export import SerialStore, render_policy
    from .reload import load_policy

    if args.check_secondary:
        from .secondary import check_secondary

        return check_secondary(cfg, args.check_secondary)
    policy = load_policy(cfg)
    progress = None
    if sys.stderr.isatty():  # long exports (many protected domains) show where they are

        def progress(done: int, total: int) -> None:
            sys.stderr.write(f"\rexporting: {done}/{total} protected domains" + ("\n" if done == total else ""))

    serials = None
    if args.output and os.path.exists(args.output):  # continue its serial: grows on change, same otherwise
        try:
            with open(args.output, encoding="utf-8", errors="replace") as fh:
                serials = SerialStore.resume(fh.read())
        except OSError as exc:
            raise ConfigError(f"cannot read {args.output}: {exc.strerror or exc}") from None
    text = render_policy(policy, origin=cfg.export_origin, serials=serials, progress=progress)
    if args.output:
        tmp = f"{args.output}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, args.output)  # a secondary never reads half a zone
        except OSError as exc:
            raise ConfigError(f"cannot write {exc.filename or args.output}: {exc.strerror or exc}") from None
    else:
        sys.stdout.write(text)
    return 0


def serve(cfg: Config, args: argparse.Namespace) -> int:
    from .logsetup import setup_logging
    from .upstream import from_resolv_conf

    setup_logging(cfg.log_level, cfg.log_format)
    for overridden in cfg.overridden:
        log.warning("flag wins over the config file: %s", overridden)
    refuse_forwarding_loop(cfg.listen, cfg.upstreams or [Endpoint(u.host, u.port) for u in from_resolv_conf()])
    if cfg.workers > 1:
        from .workers import supervise

        return supervise(cfg, lambda worker_cfg: _worker(worker_cfg, args))
    return _run(cfg, args, reuse_port=False)


def _worker(cfg: Config, args: argparse.Namespace) -> int:
    try:
        return _run(cfg, args, reuse_port=True)
    except ResolverGuardError as exc:
        sys.stderr.write(f"resolverguard: error: {exc}\n")
        return 2


def _run(cfg: Config, args: argparse.Namespace, reuse_port: bool) -> int:
    from .app import run
    from .reload import reread_config

    overrides = {k: getattr(args, k) for k in _CONFIG_KEYS if hasattr(args, k)}
    return run(cfg, reread_config(cfg.config_path, overrides), reuse_port=reuse_port)


def exceptions_command(cfg: Config, args: argparse.Namespace) -> int:
    """exceptions add|list|remove: edit zones/exceptions.toml (comments kept), validated, replaced atomically."""
    import contextlib

    from . import exceptions as exc_mod

    path = os.path.join(cfg.zones_dir, exc_mod.FILE_NAME)
    now = _now()
    if args.action == "list":
        current = exc_mod.load(path)
        if args.json:
            print(json.dumps([e.as_json(now) for e in current.entries], indent=1))
        else:
            for line in exc_mod.describe_all(current.entries, now):
                print(line)
        return 0
    if args.action == "remove":
        name = _exception_name(args.name)
        text = _valid_exceptions_text(path)
        new = exc_mod.removed(text, name)
        what = f"removed exception {name}"
    else:
        for flag in ("owner", "reason", "until"):
            if not (getattr(args, flag) or "").strip():
                raise ConfigError(f"exceptions add: --{flag} is required")
        try:
            until = exc_mod.parse_when(args.until)
            senders = tuple(exc_mod.check_sender(s) for s in args.senders)
        except ValueError as exc:
            raise ConfigError(f"exceptions add: {exc}") from None
        if until <= now:
            raise ConfigError(f"exceptions add: --until {args.until} is in the past ({exc_mod.iso(until)})")
        for flag in ("owner", "reason"):
            if "\n" in getattr(args, flag):
                raise ConfigError(f"exceptions add: --{flag} must be one line")
        entry = exc_mod.Entry(_exception_name(args.name), args.owner.strip(), args.reason.strip(), until, senders)
        text = _valid_exceptions_text(path)
        new = exc_mod.added(text, entry, replace=args.replace)
        what = f"added exception {entry.name}: {entry.describe()}"
    exc_mod.parse(new, path)  # never write a file the guard would refuse
    tmp = os.path.join(os.path.dirname(path) or ".", f".{exc_mod.FILE_NAME}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(new)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # the running guard reads the old file or the new one, never half
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    print(f"{what} ({path})")
    return 0


def _now() -> float:
    import time

    return time.time()


def _valid_exceptions_text(path: str) -> str:
    """The exceptions file's text ("" if missing); it must be valid before it is edited."""
    from .exceptions import parse

    try:
        text = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    parse(text, path)
    return text


def _exception_name(raw: str) -> str:
    from .exceptions import check_name

    try:
        return check_name(raw)
    except ValueError as exc:
        raise ConfigError(f"exceptions: {exc}") from None
