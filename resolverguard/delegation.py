"""The Postfix SMTP access policy delegation protocol, and the guard's answer to one request; pure (sans-IO).

A request is ``name=value`` lines ended by an empty line; the reply is one ``action=...`` line and an empty
line, and the connection stays open for the next request. RequestReader turns received octets into complete
requests (dicts) within fixed limits; decide() answers one request from the policy snapshot DNS uses: a
recipient whose domain is a blocked typo-neighbour gets the sink's refusal (smtp_sink.refusal: the same
wording and code), anything else ``DUNNO``. Errors are ProtocolError, whose ``kind`` is a counter label.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from . import names
from .codes import QTYPE_NUMBERS, Qtype, SinkMode, Verdict
from .errors import ResolverGuardError
from .policy import Policy
from .smtp_sink import refusal

MAX_LINE = 4096  # octets per attribute line (Postfix's longest, ccert_subject, fits)
MAX_ATTRIBUTES = 100  # Postfix 3.7 sends about 40
MAX_REQUEST = 32 * 1024  # octets per request
REPLIES = ("dunno", SinkMode.REJECT.value, SinkMode.DEFER.value)  # resolverguard_policy_requests_total{reply}
PROBLEMS = (
    "line_too_long",
    "too_many_attributes",
    "request_too_large",
    "malformed",
    "timeout",
    "too_many_connections",
)  # resolverguard_policy_errors_total{kind}
MX = QTYPE_NUMBERS[Qtype.MX]
DUNNO = "DUNNO"


class ProtocolError(ResolverGuardError):
    """bad policy delegation request"""

    def __init__(self, kind: str, problem: str) -> None:
        assert kind in PROBLEMS, kind
        self.kind, self.problem = kind, problem
        super().__init__(problem)

    def reply(self) -> bytes:
        """What the client reads before the connection closes: a temporary failure that says why."""
        return f"action=451 4.3.5 resolverguard policy service: {self.problem}\n\n".encode()


class RequestReader:
    """Octets in, complete requests out; raises ProtocolError on a line, attribute or size limit or bad syntax."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.attributes: dict[str, str] = {}
        self.size = 0

    @property
    def pending(self) -> bool:
        """Whether part of a request has been received (the request timer runs)."""
        return bool(self.buffer) or bool(self.attributes)

    def feed(self, data: bytes) -> list[dict[str, str]]:
        self.buffer += data
        done: list[dict[str, str]] = []
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > MAX_LINE:
                    raise ProtocolError("line_too_long", f"attribute line longer than {MAX_LINE} octets")
                return done
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > MAX_LINE:
                raise ProtocolError("line_too_long", f"attribute line longer than {MAX_LINE} octets")
            self.size += end + 1
            if self.size > MAX_REQUEST:
                raise ProtocolError("request_too_large", f"request larger than {MAX_REQUEST} octets")
            if not line:
                if not self.attributes:
                    raise ProtocolError("malformed", "empty request (an empty line with no attributes)")
                done.append(self.attributes)
                self.attributes, self.size = {}, 0
                continue
            self._attribute(line)

    def _attribute(self, line: bytes) -> None:
        name, eq, value = line.partition(b"=")
        try:
            key, text = name.decode("ascii"), value.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("malformed", "attribute not in UTF-8 (name in ASCII)") from None
        if not eq or not key or not key.replace("_", "").replace("-", "").isalnum():
            raise ProtocolError("malformed", f"not a name=value line: {line[:60]!r}")
        if key in self.attributes:
            raise ProtocolError("malformed", f"attribute {key} given twice")
        if len(self.attributes) >= MAX_ATTRIBUTES:
            raise ProtocolError("too_many_attributes", f"more than {MAX_ATTRIBUTES} attributes")
        self.attributes[key] = text


@dataclass(frozen=True, slots=True)
class Answer:
    """The reply to one request: the action line's value, the reply label, and what to count and log."""

    action: str
    reply: str  # a REPLIES member
    labels: tuple[str, str, str] | None = None  # submission_refusals{protected_domain, typo_class, mode}
    event: dict | None = None

    def line(self) -> bytes:
        return f"action={self.action}\n\n".encode()


ALLOW = Answer(DUNNO, "dunno")


def decide(request: Mapping[str, str], policy: Policy, mode: str, template: str, now: float) -> Answer:
    """The answer to one request; ProtocolError if it is not an smtpd_access_policy request."""
    if request.get("request") != "smtpd_access_policy":
        raise ProtocolError("malformed", "expected request=smtpd_access_policy")
    if request.get("protocol_state", "").upper() != "RCPT":
        return ALLOW
    recipient = request.get("recipient", "")
    local, at, domain_text = recipient.rpartition("@")
    try:
        domain = names.query_text(domain_text) if at and local else ""
    except ValueError:
        domain = ""
    if not domain:
        return ALLOW
    who = {k: request.get(k, "") for k in ("sender", "sasl_username", "client_address", "client_name")}
    match = policy.guard.find_neighbour(domain)
    if match is None:
        return ALLOW
    granted = policy.exceptions.for_sender(domain, now, who["sender"], who["sasl_username"])
    if granted is not None:  # let through on purpose: an audit event naming the exception
        event = {
            "event": "exception_allowed",
            "via": "policy",
            "exception": granted.name,
            "owner": granted.owner,
            "until": granted.until_text(),
            "reason": granted.reason,
            "recipient": recipient,
            "protected": match.protected,
            "class": match.typo_class,
            **who,
        }
        return Answer(DUNNO, "dunno", event=event)
    if policy.decide(domain, MX, None).outcome != Verdict.BLOCKED_TYPO:  # log-only, an override's passthru
        return ALLOW
    refused = refusal(recipient, policy, mode, template)
    if refused.match is None:
        return ALLOW
    m = refused.match
    event = {
        "event": "submission_refusal",
        "recipient": recipient,
        "suggestion": refused.suggestion,
        "protected": m.protected,
        "class": m.typo_class,
        **who,
        "mode": mode,
        "reply": f"{refused.code} {refused.status}",
    }
    return Answer(refused.line(), mode, (policy.entry_of(m), m.typo_class, mode), event)
