"""The typed vocabulary: outcomes, verdicts, actions, typo classes, rcode and qtype names, each written once.

The values are Prometheus label values, config words and event-log fields; a StrEnum member *is* its string,
so it can be compared with, formatted and used as a label like the plain string it replaces.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

import dns.rcode


class Outcome(StrEnum):
    """How a query was answered: the `outcome` label of resolverguard_responses_total (all pre-declared)."""

    FORWARDED = "forwarded"
    CACHED = "cached"
    STALE = "stale"
    BLOCKED_TYPO = "blocked_typo"
    BLOCKED_OVERRIDE = "blocked_override"
    REFUSED = "refused"
    RATELIMITED = "ratelimited"
    SERVFAIL = "servfail"
    FORMERR = "formerr"
    NOTIMP = "notimp"
    DROPPED = "dropped"
    ANY_MINIMAL = "any_minimal"
    TRANSFER = "transfer"
    SINK_HOST = "sink_host"  # the A/AAAA of the sink mail host, answered by the guard itself


class Verdict(StrEnum):
    """What policy made of a question (Decision.outcome, the event log's `outcome`)."""

    FORWARDED = "forwarded"
    PASSTHRU = "passthru"  # an override let it through
    LOGGED_TYPO = "logged_typo"  # a typo-neighbour let through in log-only mode
    BLOCKED_TYPO = "blocked_typo"
    BLOCKED_OVERRIDE = "blocked_override"


class Action(StrEnum):
    """What to do with a query (Decision.action, config `typo.action`, RPZ actions)."""

    FORWARD = "forward"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    SINK = "sink"
    REFUSED = "refused"
    DROP = "drop"
    TCP_ONLY = "tcp-only"
    LOCAL_DATA = "local-data"
    PASSTHRU = "passthru"
    LOG_ONLY = "log-only"


TYPO_ACTIONS: tuple[Action, ...] = (Action.NXDOMAIN, Action.SINK, Action.REFUSED, Action.LOG_ONLY)
RPZ_ACTIONS: tuple[Action, ...] = (
    Action.NXDOMAIN,
    Action.NODATA,
    Action.DROP,
    Action.TCP_ONLY,
    Action.LOCAL_DATA,
    Action.PASSTHRU,
)
RATELIMIT_ACTIONS: tuple[Action, ...] = (Action.REFUSED, Action.DROP)
# The RPZ CNAME target of each action (draft-vixie-dnsop-dns-rpz), written once: loaders read it, the export writes it.
RPZ_TARGETS: Mapping[Action, str] = {
    Action.NXDOMAIN: ".",
    Action.NODATA: "*.",
    Action.PASSTHRU: "rpz-passthru.",
    Action.DROP: "rpz-drop.",
    Action.TCP_ONLY: "rpz-tcp-only.",
}
RPZ_TARGET_ACTIONS: Mapping[str, Action] = {target: action for action, target in RPZ_TARGETS.items()}


class UpstreamFailure(StrEnum):
    """Why an upstream exchange failed: the `kind` label of resolverguard_upstream_errors_total."""

    TIMEOUT = "timeout"
    REFUSED = "refused"  # REFUSED, or ICMP port unreachable
    ERROR = "error"
    MISMATCH = "mismatch"  # a reply that does not answer what was sent
    WRONG_SOURCE = "wrong_source"  # a reply from an address or port the query was not sent to


DOWN_FAILURES = frozenset({UpstreamFailure.TIMEOUT, UpstreamFailure.REFUSED, UpstreamFailure.ERROR})  # up -> 0


class Malformed(StrEnum):
    """Why a message was not answered normally: the `kind` label of resolverguard_malformed_total."""

    UNREADABLE = "unreadable"  # no header: dropped
    RESPONSE = "response"  # QR set: dropped
    FORMERR = "formerr"
    NOTIMP = "notimp"
    TCP_FRAME = "tcp_frame"  # a TCP frame too short for a header: the connection is aborted


class TypoPolicy(StrEnum):
    """Per typo class: block it, or only log it (config `[typo.classes]`)."""

    BLOCK = "block"
    LOG_ONLY = "log-only"


class SinkMode(StrEnum):
    """What the SMTP sink answers a misdirected recipient (config `[smtp_sink] mode`)."""

    REJECT = "reject"  # 5xx: the sender gets a bounce now
    DEFER = "defer"  # 4xx: the message stays in the sender's MTA queue


class TypoClass(StrEnum):
    """The typo classes in rank order (earlier wins); `typo_class` label values and config keys."""

    OMISSION = "omission"  # gmil.com
    INSERTION = "insertion"  # gmaiql.com (a keyboard neighbour inserted inside the label)
    ADDITION = "addition"  # gmaila.com (a character appended to the label)
    REPETITION = "repetition"  # gmaail.com
    TRANSPOSITION = "transposition"  # gmial.com
    REPLACEMENT = "replacement"  # gnail.com (keyboard neighbour or any other character)
    VOWEL_SWAP = "vowel_swap"  # gmeil.com
    HYPHENATION = "hyphenation"  # g-mail.com
    BITSQUATTING = "bitsquatting"  # gmaml.com (one bit flipped)
    PLURAL = "plural"  # gmaiels.com, armys.mil
    HOMOGLYPH = "homoglyph"  # rnicrosoft.com, g00gle.com (ASCII look-alikes)
    IDN_HOMOGLYPH = "idn_homoglyph"  # xn--pypal-4ve.com (Unicode confusables, punycode decoded)
    DOT_OMISSION = "dot_omission"  # armymil.com, gmailcom.com, modgov.uk
    DOT_INSERTION = "dot_insertion"  # ar.my.mil, g.mail.com
    TLD_TYPO = "tld_typo"  # army.ml, army.il, gmail.co, mod.gov.ua, mod.uk
    TLD_SWAP = "tld_swap"  # gmail.xyz
    COMBO = "combo"  # army-mil.com, army.mil.com
    DICTIONARY = "dictionary"  # gmail-login.com, armyportal.com
    NUMERAL = "numeral"  # office3six5.com, officethreesixfive.com (numbers as words or digits)
    TWO_EDITS = "two_edits"  # raythneo.com, lockheedmatrin.com (two edits, Damerau-Levenshtein, labels of 8+)


class Rcode(StrEnum):
    """Rcode names as metric labels (`rcode` of responses_total and upstream_responses_total)."""

    NOERROR = "NOERROR"
    FORMERR = "FORMERR"
    SERVFAIL = "SERVFAIL"
    NXDOMAIN = "NXDOMAIN"
    NOTIMP = "NOTIMP"
    REFUSED = "REFUSED"
    OTHER = "other"  # any other rcode
    NONE = "none"  # no reply was sent


RCODE_NAMES: Mapping[int, Rcode] = {int(dns.rcode.from_text(name)): name for name in Rcode if name.isupper()}


def rcode_name(rcode: int) -> Rcode:
    """The label for a numeric rcode: its name, or `other`."""
    return RCODE_NAMES.get(rcode, Rcode.OTHER)


class Qtype(StrEnum):
    """The query types named in metrics and config (`qtype` labels, `typo.qtypes`); all others are `other`."""

    A = "A"
    NS = "NS"
    CNAME = "CNAME"
    SOA = "SOA"
    PTR = "PTR"
    MX = "MX"
    TXT = "TXT"
    AAAA = "AAAA"
    SRV = "SRV"
    SVCB = "SVCB"
    HTTPS = "HTTPS"
    ANY = "ANY"


QTYPE_NUMBERS: Mapping[str, int] = {
    Qtype.A: 1,
    Qtype.NS: 2,
    Qtype.CNAME: 5,
    Qtype.SOA: 6,
    Qtype.PTR: 12,
    Qtype.MX: 15,
    Qtype.TXT: 16,
    Qtype.AAAA: 28,
    Qtype.SRV: 33,
    Qtype.SVCB: 64,
    Qtype.HTTPS: 65,
    Qtype.ANY: 255,
}
QTYPES: Mapping[int, Qtype] = {number: Qtype(name) for name, number in QTYPE_NUMBERS.items()}
OTHER_QTYPE = "other"
