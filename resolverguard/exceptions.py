"""Exceptions: typo-neighbours let through on purpose, each with an owner, a reason and an expiry; pure.

They live in one reviewable TOML file in the zones directory (``exceptions.toml``), one ``[[exception]]``
table each. A domain-wide exception (no ``senders``) becomes a passthru rule in the ``exceptions`` RPZ zone,
consulted before every other zone: DNS, the sink, the policy service and the export honour it alike. One
with ``senders`` applies only in the policy service, to those envelope senders or SASL users. Editing keeps
the file's comments (tomlkit); reading uses tomllib. Time is always passed in (``now``, unix seconds).
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass

from . import names
from .errors import ConfigError, ZoneFileError

FILE_NAME = "exceptions.toml"
ZONE = "exceptions"  # the RPZ zone name of the domain-wide exceptions (rpz_hits label, event "rule")
KEYS = ("name", "owner", "reason", "until", "senders")
SOON = 7 * 86_400  # "expiring soon": within 7 days
HEADER = """\
# resolverguard exceptions: typo-neighbours let through on purpose, each with an owner, a reason and an end.
# Managed with `resolverguard exceptions add|list|remove`; edits by hand are fine, `resolverguard lint` checks
# them. An entry with `senders` applies only to those senders (or SASL users) in the policy service.
"""


@dataclass(frozen=True, slots=True)
class Entry:
    """One exception: NAME and every name below it are not blocked until `until` (unix seconds, inclusive)."""

    name: str
    owner: str
    reason: str
    until: float
    senders: tuple[str, ...] = ()
    line: int | None = None

    def active(self, now: float) -> bool:
        return now <= self.until

    @property
    def domain_wide(self) -> bool:
        return not self.senders

    def until_text(self) -> str:
        return iso(self.until)

    def describe(self) -> str:
        """check's wording: "exception by OWNER until WHEN: REASON"."""
        who = f" for {', '.join(self.senders)}" if self.senders else ""
        return f"exception by {self.owner} until {self.until_text()}{who}: {self.reason}"

    def as_json(self, now: float) -> dict:
        return {
            "name": self.name,
            "owner": self.owner,
            "reason": self.reason,
            "until": self.until_text(),
            "senders": list(self.senders),
            "expired": not self.active(now),
        }


@dataclass(frozen=True)
class Exceptions:
    """All entries of the file (expired ones included); lookups ask for those active at `now`."""

    entries: tuple[Entry, ...] = ()
    path: str = ""

    def active(self, now: float) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.active(now))

    def next_expiry(self, now: float) -> float | None:
        ends = [e.until for e in self.entries if e.active(now)]
        return min(ends) if ends else None

    def expiring(self, now: float, within: float = SOON) -> int:
        return sum(1 for e in self.entries if e.active(now) and e.until - now <= within)

    def for_domain(self, domain: str, now: float) -> Entry | None:
        """The active domain-wide exception covering domain (itself or a parent), nearest first."""
        return self._find(domain, now, lambda e: e.domain_wide)

    def for_sender(self, domain: str, now: float, *who: str) -> Entry | None:
        """An active exception covering domain that applies to one of `who` (sender, SASL user), or domain-wide."""
        asked = {w.strip().lower() for w in who if w and w.strip()}
        return self._find(domain, now, lambda e: e.domain_wide or bool(asked & set(e.senders)))

    def _find(self, domain: str, now: float, applies) -> Entry | None:
        candidates = names.parents(domain)
        for name in candidates:  # nearest name first; few entries, so a scan is fine
            for entry in self.entries:
                if entry.name == name and entry.active(now) and applies(entry):
                    return entry
        return None

    def rpz_text(self, now: float) -> str:
        """The passthru zone of the active domain-wide exceptions (NAME and *.NAME each)."""
        lines = ["$ORIGIN exceptions.", "$TTL 300", "@ SOA ns.invalid. hostmaster.invalid. 1 3600 600 86400 60"]
        lines.append("  NS ns.invalid.")
        for e in self.active(now):
            if e.domain_wide:
                lines += [f"{e.name} CNAME rpz-passthru.", f"*.{e.name} CNAME rpz-passthru."]
        return "\n".join(lines) + "\n"


EMPTY = Exceptions()


def iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_when(text: str) -> float:
    """--until: an ISO 8601 date (the end of that day, UTC) or date-time (no offset: UTC); ValueError if not."""
    text = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = dt.date.fromisoformat(text)
            return dt.datetime.combine(day, dt.time(23, 59, 59), dt.UTC).timestamp()
        when = dt.datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"not an ISO 8601 date or date-time: {text!r} (e.g. 2026-12-31 or 2026-12-31T18:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def check_name(raw: str) -> str:
    """An exception's NAME: a domain name, not the root, not a whole public suffix (that would pass every typo)."""
    try:
        name = names.query_text(raw) if isinstance(raw, str) else ""
    except ValueError as exc:
        raise ValueError(f"bad name {raw!r}: {exc}") from None
    if not name or re.search(r"[\s/:@*]", raw):
        raise ValueError(f"bad name {raw!r}: expected a domain name such as army.ml")
    if names.is_public_suffix(name):
        raise ValueError(f"bad name {raw!r}: a whole public suffix would let every typo under it through")
    return name


def check_sender(raw: object) -> str:
    if not isinstance(raw, str) or not raw.strip() or re.search(r"[\s<>,]", raw.strip()):
        raise ValueError(f"bad sender {raw!r}: expected an address (user@example.org) or a SASL user name")
    return raw.strip().lower()


def entry_from(raw: dict, line_of: dict[str, int], header: int | None) -> Entry:
    """One [[exception]] table -> Entry; ValueError("line: problem") naming the key's line."""

    def bad(key: str | None, problem: str) -> ValueError:
        return ValueError(f"{line_of.get(key, header) if key else header}: {problem}")

    if not isinstance(raw, dict):
        raise bad(None, "expected an [[exception]] table")
    for key in raw:
        if key not in KEYS:
            raise bad(key, f"unknown key {key!r} (known: {', '.join(KEYS)})")
    for key in ("name", "owner", "reason", "until"):
        if key not in raw or raw[key] in ("", None):
            raise bad(None, f"missing {key}")
    for key in ("owner", "reason"):
        if not isinstance(raw[key], str) or not raw[key].strip() or "\n" in raw[key]:
            raise bad(key, f"{key}: expected one line of text")
    try:
        name = check_name(raw["name"])
    except ValueError as exc:
        raise bad("name", str(exc)) from None
    until = raw["until"]
    if isinstance(until, dt.datetime):
        if until.tzinfo is None:
            until = until.replace(tzinfo=dt.UTC)
        seconds = until.timestamp()
    elif isinstance(until, dt.date):
        seconds = parse_when(until.isoformat())
    else:
        raise bad("until", f"until: expected a TOML date or date-time such as 2026-12-31T23:59:59Z, got {until!r}")
    senders = raw.get("senders", [])
    if not isinstance(senders, list):
        raise bad("senders", 'senders: expected a list such as ["alice@example.org"]')
    try:
        checked = tuple(check_sender(s) for s in senders)
    except ValueError as exc:
        raise bad("senders", str(exc)) from None
    return Entry(name, raw["owner"].strip(), raw["reason"].strip(), seconds, checked, header)


def _lines(text: str) -> list[tuple[int, dict[str, int]]]:
    """Per [[exception]] header: its line and the line of each key below it."""
    out: list[tuple[int, dict[str, int]]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(r"\s*\[\[\s*exception\s*\]\]", line):
            out.append((number, {}))
        elif out and (m := re.match(r"\s*([\w-]+)\s*=", line)):
            out[-1][1].setdefault(m[1], number)
    return out


def parse(text: str, path: str) -> Exceptions:
    """The file's text -> Exceptions; ZoneFileError(path, line) on any problem, duplicates included."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+)", str(exc))
        msg = re.sub(r"\s*\(at (line|end of document).*\)", "", str(exc))
        raise ZoneFileError(path, int(m[1]) if m else None, msg) from None
    for key in raw:
        if key != "exception":
            raise ZoneFileError(path, None, f"unknown key {key!r}: only [[exception]] tables belong here")
    tables = raw.get("exception", [])
    if not isinstance(tables, list):
        raise ZoneFileError(path, None, "exception: write each entry as an [[exception]] table")
    positions = _lines(text)
    entries: list[Entry] = []
    seen: dict[str, int | None] = {}
    for i, table in enumerate(tables):
        header, line_of = positions[i] if i < len(positions) else (None, {})
        try:
            entry = entry_from(table, line_of, header)
        except ValueError as exc:
            line, _, problem = str(exc).partition(": ")
            raise ZoneFileError(path, int(line) if line.isdigit() else None, problem) from None
        if entry.name in seen:
            raise ZoneFileError(path, header, f"duplicate exception {entry.name} (first at line {seen[entry.name]})")
        seen[entry.name] = header
        entries.append(entry)
    return Exceptions(tuple(entries), path)


def load(path: str) -> Exceptions:
    """Read the file; a missing file is no exceptions."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return Exceptions((), path)
    except UnicodeDecodeError:
        raise ZoneFileError(path, None, "not UTF-8 text") from None
    except OSError as exc:
        raise ZoneFileError(path, None, f"cannot read: {exc.strerror or exc}") from None
    return parse(text, path)


def added(text: str, entry: Entry, replace: bool = False) -> str:
    """The file's text with entry appended (or, with replace, put in place of the one of that name)."""
    import tomlkit

    doc = tomlkit.parse(text or HEADER)
    tables = doc.get("exception")
    if tables is None:
        tables = tomlkit.aot()
        doc.append("exception", tables)
    item = tomlkit.table()
    item["name"] = entry.name
    item["owner"] = entry.owner
    item["reason"] = entry.reason
    item["until"] = dt.datetime.fromtimestamp(entry.until, dt.UTC).replace(microsecond=0)
    if entry.senders:
        item["senders"] = list(entry.senders)
    for i, existing in enumerate(tables):
        if existing.get("name") and _same(existing["name"], entry.name):
            if not replace:
                raise ConfigError(f"exception {entry.name} exists already; give --replace to replace it")
            tables[i] = item
            return tomlkit.dumps(doc)
    tables.append(item)
    return tomlkit.dumps(doc)


def removed(text: str, name: str) -> str:
    import tomlkit

    doc = tomlkit.parse(text)
    tables = doc.get("exception") or []
    for i, existing in enumerate(tables):
        if existing.get("name") and _same(existing["name"], name):
            del tables[i]
            return tomlkit.dumps(doc)
    raise ConfigError(f"no exception named {name}")


def _same(a: object, b: str) -> bool:
    try:
        return check_name(str(a)) == b
    except ValueError:
        return False


def describe_all(entries: Iterable[Entry], now: float) -> list[str]:
    out = []
    for e in entries:
        state = "expired" if not e.active(now) else "active"
        who = f" senders={','.join(e.senders)}" if e.senders else " (domain-wide)"
        out.append(f"{e.name}\t{state}\tuntil {e.until_text()}\towner {e.owner}{who}\treason {e.reason}")
    return out
