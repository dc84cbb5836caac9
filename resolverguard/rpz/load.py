"""Loading: reading zone files and directories (the only I/O of the package): fast reader, then dnspython."""

from __future__ import annotations

from pathlib import Path

import dns.exception
import dns.name
import dns.zone
import dns.zonefile

from resolverguard.errors import ZoneFileError
from resolverguard.rpz.builder import index_zone
from resolverguard.rpz.diagnostics import cname_conflict_line, one_line, prescan, syntax_error
from resolverguard.rpz.fastload import split_fast
from resolverguard.rpz.table import RpzZone


def load_rpz(path: str | Path, name: str | None = None) -> RpzZone:
    """Read and index one RPZ zone file; raises ZoneFileError naming the file and line."""
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ZoneFileError(where, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise ZoneFileError(where, None, f"cannot read: {exc.strerror or exc}") from exc
    return load_rpz_text(text, where, name=name if name is not None else path.stem, stem=path.stem)


def load_rpz_text(text: str, path: str, *, name: str, stem: str | None = None, fast_path: bool = True) -> RpzZone:
    """Like load_rpz, from text already read; ``path`` is only used in messages."""
    try:
        default_origin = dns.name.from_text((stem if stem is not None else name) + ".")
    except dns.exception.DNSException as exc:
        raise ZoneFileError(path, None, f"file stem is not a valid zone origin: {exc}") from exc
    fast = split_fast(text, name) if fast_path else None
    numbers = None
    if fast is not None:
        text, numbers = fast.rest, fast.numbers
    scan = prescan(text, default_origin, numbers)
    origin = scan.origin or default_origin
    if fast is not None and not fast.fits(scan, origin):
        return load_rpz_text(fast.original, path, name=name, stem=stem, fast_path=False)  # dnspython decides all
    try:
        zone = dns.zone.from_text(
            text, origin=origin, relativize=False, allow_include=False, filename=path, check_origin=False
        )
    except dns.exception.SyntaxError as exc:
        error = syntax_error(path, exc, text, origin)
        if numbers is not None and error.line:  # a line of the rest: its number in the file
            error = ZoneFileError(path, numbers[min(error.line, len(numbers)) - 1], error.problem)
        raise error from exc
    except dns.zonefile.CNAMEAndOtherData as exc:
        raise ZoneFileError(path, cname_conflict_line(scan), "CNAME and other data at the same owner") from exc
    except dns.exception.DNSException as exc:
        raise ZoneFileError(path, None, one_line(str(exc))) from exc
    for owner, lineno in scan.owners.items():
        if not owner.is_subdomain(origin):
            raise ZoneFileError(
                path,
                lineno,
                f"owner {owner} is outside the zone {origin} (absolute name with a trailing dot? "
                f"write it without the final dot)",
            )
    return index_zone(zone, origin, path, name, scan, fast.hits if fast is not None else ())


def load_zone_dir(directory: str | Path) -> list[RpzZone]:
    """Load ``*.rpz`` in sorted file-name order: that order is the precedence order (first wins)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ZoneFileError(str(directory), None, "RPZ zone directory does not exist")
    return [load_rpz(path) for path in sorted(directory.glob("*.rpz"), key=lambda p: p.name)]
