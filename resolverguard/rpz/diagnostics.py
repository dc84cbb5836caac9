"""Diagnostics: a light pre-scan mapping owners to lines; dnspython's errors turned into file:line messages."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rdataclass
import dns.ttl
import dns.zone

from resolverguard.errors import ZoneFileError


@dataclass
class Scan:
    """What a light pre-scan of the text knows: owners → first line, and the first $ORIGIN."""

    origin: dns.name.Name | None = None
    owners: dict[dns.name.Name, int] = field(default_factory=dict)
    records: list[tuple[int, dns.name.Name, str]] = field(default_factory=list)  # line, owner, type


def paren_depth(line: str, depth: int) -> tuple[int, str]:
    """Track parentheses outside quotes and comments; also return the line without its comment."""
    if "(" not in line and ")" not in line and '"' not in line and ";" not in line:
        return depth, line
    quoted = escaped = False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch == ";":
            return depth, line[:i]
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
    return depth, line


def _record_type(tokens: list[str]) -> str:
    for tok in tokens:
        if tok in ("(", ")"):
            continue
        try:
            dns.ttl.from_text(tok)  # dns.ttl.BadTTL (a DNSException) if it is not a TTL
            continue
        except dns.exception.DNSException:
            pass
        try:
            dns.rdataclass.from_text(tok)  # UnknownRdataclass; ValueError for CLASS<n> out of range
            continue
        except (dns.exception.DNSException, ValueError):
            pass
        return tok.strip("()").upper()
    return ""


def prescan(text: str, default_origin: dns.name.Name, numbers: Sequence[int] | None = None) -> Scan:
    """Map owner names to line numbers, so errors found after parsing can still name a line.

    ``numbers``: the file's line number of each line of ``text`` (when simple lines were taken out).
    """
    scan = Scan()
    origin = default_origin
    owner: dns.name.Name | None = None
    depth = 0
    seen_record = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        if numbers is not None:
            lineno = numbers[lineno - 1]
        if depth > 0:
            depth, _ = paren_depth(raw, depth)
            continue
        depth, line = paren_depth(raw, 0)
        if not line.strip():
            continue
        tokens = line.split()
        if line[0] == "$":
            if tokens[0].upper() == "$ORIGIN" and len(tokens) > 1:
                try:
                    origin = dns.name.from_text(tokens[1], origin=origin)
                except dns.exception.DNSException:
                    continue  # dnspython reports it with its line
                if scan.origin is None and not seen_record:
                    scan.origin = origin
            continue
        if line[0] in " \t":
            rest = tokens
        else:
            try:
                owner = dns.name.from_text(tokens[0], origin=origin) if tokens[0] != "@" else origin
            except dns.exception.DNSException:
                owner = None
            rest = tokens[1:]
        seen_record = True
        if owner is None:
            continue
        scan.owners.setdefault(owner, lineno)
        scan.records.append((lineno, owner, _record_type(rest)))
    return scan


_SYNTAX_LINE = re.compile(r":(\d+): (.*)$", re.S)


def syntax_error(path: str, exc: dns.exception.SyntaxError, text: str, origin: dns.name.Name) -> ZoneFileError:
    message = str(exc)
    if message.startswith(path + ":") and (m := _SYNTAX_LINE.match(message, len(path))):
        line, problem = int(m.group(1)), one_line(m.group(2))
        # dnspython counts the line after a record whose end it had to read: find the record at fault
        # (the earlier line first: had it been broken, dnspython would have stopped there)
        for candidate in (line - 1, line):
            if (found := _line_problem(text, candidate, origin)) is not None:
                return ZoneFileError(path, candidate, found)
        return ZoneFileError(path, line, problem)
    return ZoneFileError(path, None, one_line(message))


def _line_problem(text: str, lineno: int, origin: dns.name.Name) -> str | None:
    """Parse one single-line record alone; its problem, or None if it parses (or cannot be tried alone)."""
    lines = text.splitlines()
    if not 1 <= lineno <= len(lines):
        return None
    line = lines[lineno - 1]
    if not line.strip() or line.lstrip().startswith((";", "$")) or "(" in line:
        return None
    record = ("@" + line) if line[0] in " \t" else line
    probe = f"$ORIGIN {origin}\n@ 300 SOA a. b. 1 1 1 1 1\n{record}\n"
    try:
        dns.zone.from_text(probe, origin=origin, relativize=False, allow_include=False, check_origin=False)
    except dns.exception.SyntaxError as exc:
        problem = one_line(re.sub(r"^<string>:\d+: ", "", str(exc)))
        return f"{problem} in {line.strip()!r}"
    except dns.exception.DNSException:
        return None
    return None


def one_line(text: str) -> str:
    return " ".join(text.split())


def cname_conflict_line(scan: Scan) -> int | None:
    types: dict[dns.name.Name, set[str]] = {}
    for lineno, owner, rdtype in scan.records:
        types.setdefault(owner, set()).add(rdtype)
        kinds = types[owner] - {"RRSIG", "NSEC", "NSEC3"}
        if "CNAME" in kinds and len(kinds) > 1:
            return lineno
    return None
