"""One client query's way through the upstreams as a pure state machine (h11's Connection is the model).

    resolution = Resolution(query, upstreams, settings, ids)
    actions = resolution.start(now)                 # Send, Arm, or Done
    actions = resolution.on_reply(data, addr, now)  # None: not the reply (counted as a spoof), else actions
    actions = resolution.on_error(exc, now)         # ICMP error, connect or send failure
    actions = resolution.on_timer(now)              # the deadline of the last Arm has come

Everything that decides what happens lives here: the order of tries, retransmission (Karn's rule for RTT
samples), failover, the EDNS fallback on FORMERR/NOTIMP, REFUSED, TC→TCP, question-less error replies, CNAME
loops and forwarding loops. Sockets, timers and the clock belong to the driver (driver.py); `now` is always
given. After a Send, the previous exchange is over; after Done, the resolution is.
"""

from __future__ import annotations

import logging
import os
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass

from .. import wire
from ..codes import UpstreamFailure, rcode_name
from ..errors import BadUpstreamReply, ForwardingLoop, MalformedQuery, UpstreamError, UpstreamRefused, UpstreamTimeout
from .pool import Upstream, ranked

log = logging.getLogger(__name__)

MAX_TRIES = 64
# What the guard adds to every query it sends upstream (with its OPT, also for clients without EDNS) (an option from the RFC 6891 9 local/experimental
# range): the path of guards the query has been through, 4 octets each. A guard that finds its own token in a
# query (another guard sent it back: A -> B -> A) or more than MAX_HOPS of them answers it at once with the
# forwarding-loop SERVFAIL instead of forwarding it again.
LOOP_OPTION = 65_333
MAX_HOPS = 8
TOKEN = os.urandom(4)  # this guard's; --workers forks after import, so every worker of one guard shares it
_LOOP_CODE = struct.pack("!H", LOOP_OPTION)
_RR = struct.Struct("!HHIH")
_U16 = struct.Struct("!H")
_CNAME = 5
_CNAME_IN = b"\x00\x05\x00\x01"
EDE_TEXT_MAX = 200  # the EDE text naming the upstreams that failed is cut here ("..." and how many more)


@dataclass(frozen=True, slots=True)
class Settings:
    timeout: float = 1.0  # the longest wait for one try
    deadline: float = 2.5  # the whole resolution (servfail_after)
    randomize_case: bool = False  # 0x20


@dataclass(slots=True)
class Send:
    """Send data to upstream (over TCP when tcp): a new exchange; the previous one, if any, is over."""

    upstream: Upstream
    data: bytes
    tcp: bool


class Resend:
    """Send the current exchange's datagram again, on the same socket (a late reply to the first still counts)."""

    __slots__ = ()


RESEND = Resend()


@dataclass(slots=True)
class Arm:
    """Call on_timer once `deadline` (the clock of `now`) has come; replaces the previous Arm."""

    deadline: float


@dataclass(slots=True)
class Done:
    """The resolution is over: the reply re-addressed to the client, or the UpstreamError why there is none."""

    result: bytes | UpstreamError


def _name(data: bytes, pos: int) -> bytes:
    """The (possibly compressed) name at pos, lowercased, as wire labels."""
    out, jumps = [], 0
    while True:
        n = data[pos]
        if n & 0xC0 == 0xC0:
            jumps += 1
            if jumps > 64:
                raise MalformedQuery("compression loop")
            pos = ((n & 0x3F) << 8) | data[pos + 1]
        elif n == 0:
            return b"".join(out) + b"\x00"
        elif n > 63:
            raise MalformedQuery("bad label type")
        else:
            out.append(data[pos : pos + n + 1].lower())
            pos += n + 1


def cname_loop(reply: bytes, qend: int) -> bool:
    """Does the answer's CNAME chain from the question's name come back on itself (a -> b -> a)?"""
    if reply.find(_CNAME_IN, qend) < 0:  # no CNAME record can be there: no walk
        return False
    try:
        pos, targets = qend, {}
        for _ in range(_U16.unpack_from(reply, 6)[0]):
            owner, pos = pos, wire.skip_name(reply, pos)
            rtype, _, _, rdlen = _RR.unpack_from(reply, pos)
            if rtype == _CNAME:
                targets[_name(reply, owner)] = _name(reply, pos + 10)
            pos += 10 + rdlen
        name, seen = reply[12 : qend - 4].lower(), set()
        while name in targets:
            seen.add(name)
            name = targets[name]
            if name in seen:
                return True
    except (struct.error, IndexError, MalformedQuery):
        return False  # unreadable: the forwarder passes it on as it came, uncached
    return False


def without_opt(reply: bytes, qend: int) -> bytes:
    """The reply (its question ends at qend) without the OPT record of its additional section (ARCOUNT one less);
    as it came when it has none or is unreadable."""
    ar = (reply[10] << 8) | reply[11]
    if not ar or reply.find(b"\x00\x29", qend) < 0:  # no record, or none of type OPT can be there
        return reply
    skip, unpack = wire.skip_name, _RR.unpack_from
    pos = 12 if reply[4:6] == b"\x00\x00" else qend  # question-less (an error reply) or our question
    try:
        first = ((reply[6] << 8) | reply[7]) + ((reply[8] << 8) | reply[9])  # the additional section's first
        for i in range(first + ar):
            owner = pos
            pos = skip(reply, pos)
            rtype, _, _, rdlen = unpack(reply, pos)
            pos += 10 + rdlen
            if rtype == 41 and i >= first:  # OPT
                return reply[:10] + _U16.pack(ar - 1) + reply[12:owner] + reply[pos:]
    except (struct.error, IndexError, MalformedQuery):
        pass
    return reply


def loop_path(query: wire.Query) -> bytes | None:
    """The guards this query has been through (LOOP_OPTION), b"" for none; None when it has looped."""
    data = query.data
    if not query.edns or data.find(_LOOP_CODE, query.qend) < 0:
        return b""
    try:
        _, _, _, an, ns, ar = struct.unpack_from("!HHHHHH", data)
        pos = query.qend
        for i in range(an + ns + ar):
            pos = wire.skip_name(data, pos)
            rtype, _, _, rdlen = _RR.unpack_from(data, pos)
            if rtype == wire.OPT and i >= an + ns:
                opos, end = pos + 10, pos + 10 + rdlen
                while opos + 4 <= end:
                    code, olen = struct.unpack_from("!HH", data, opos)
                    if code == LOOP_OPTION:
                        path = data[opos + 4 : opos + 4 + olen]
                        hops = [path[i : i + 4] for i in range(0, len(path) - 3, 4)]
                        return None if TOKEN in hops or len(hops) >= MAX_HOPS else path[: 4 * len(hops)]
                    opos += 4 + olen
            pos += 10 + rdlen
    except (struct.error, IndexError, MalformedQuery):
        pass
    return b""


def _opt(do: bool, path: bytes) -> bytes:
    """The guard's OPT for an upstream query: payload 1232, DO of the client, the loop path with our token."""
    path += TOKEN
    rdata = struct.pack("!HH", LOOP_OPTION, len(path)) + path
    return b"\x00" + _RR.pack(wire.OPT, wire.EDNS_PAYLOAD, 0x8000 if do else 0, len(rdata)) + rdata


_OWN_OPT = (_opt(False, b""), _opt(True, b""))


class Resolution:
    """The state of one client query's resolution; see the module docstring for the protocol.

    Each try waits the upstream's adaptive timeout (measured RTT, capped at `timeout`). With one upstream the
    same datagram is sent again from the same socket with the wait doubled, so a late reply to the first still
    counts; with several, the next upstream is tried, then the next round with doubled waits. An upstream that
    refused (REFUSED, FORMERR to a plain query, port unreachable) is not asked again within the resolution.
    """

    __slots__ = (
        "query", "upstreams", "settings", "ids", "observe", "end", "alone", "given_up", "attempt", "error",
        "failures", "upstream", "started", "edns", "budget", "data", "tcp", "first", "try_end", "wait", "sends",
        "path", "over",
    )  # fmt: skip

    def __init__(
        self,
        query: wire.Query,
        upstreams: list[Upstream],
        settings: Settings,
        ids: Callable[[], bytes],
        observe: Callable[[Upstream, str, float], None],
    ) -> None:
        self.query, self.upstreams, self.settings, self.ids, self.observe = query, upstreams, settings, ids, observe
        self.given_up: set[Upstream] | None = None  # refused: asking again within this query would get the same
        self.attempt = -1
        self.error: UpstreamError | None = None  # the last try's; None: no try failed
        self.failures: list[str] | None = None  # "<upstream> <why>" of each failed upstream: the EDE text
        self.upstream: Upstream | None = None  # the current try's (data: its query as sent; tcp: over TCP)
        self.over = False

    # ---------------------------------------------------------------- events

    def start(self, now: float) -> tuple:
        self.end = now + self.settings.deadline
        self.path = loop_path(self.query) if self.query.edns else b""
        if self.path is None:
            return self._done(ForwardingLoop())
        self.upstreams = ranked(self.upstreams, now)
        self.alone = len(self.upstreams) == 1
        return self._next(now)

    def on_reply(self, data: bytes, addr: tuple, now: float) -> tuple | None:
        """A datagram (or TCP message) carrying the current exchange's ID: None if it is not the reply."""
        upstream = self.upstream
        if self.over or upstream is None:
            return None
        if (addr[0], addr[1]) != upstream.peer:
            self.observe(upstream, "wrong_source", 0.0)
            return None
        if not wire.reply_matches(data, self.data, self.query.qend):
            self.observe(upstream, "mismatch", 0.0)
            return None
        if self.sends == 1 and not self.tcp:  # Karn: a reply after a retransmission says nothing about the RTT
            upstream.sample(now - self.first)
        if data[2] & 0x02 and not self.tcp:  # TC (the header is enough): the same question again over TCP
            self.tcp = True
            self.first, self.sends = now, 1
            self.try_end = now + max(0.05, self.budget)
            return Send(upstream, self.data, True), Arm(self.try_end)
        return self._answered(data, now)

    def on_error(self, exc: BaseException, now: float) -> tuple:
        """The current exchange failed: an ICMP error, a refused or broken connection, a failed send."""
        if self.over or self.upstream is None:
            return ()
        upstream = self.upstream
        if isinstance(exc, UpstreamTimeout | TimeoutError):
            return self._failed(UpstreamFailure.TIMEOUT, UpstreamTimeout(upstream.name), "timeout", now)
        if isinstance(exc, UpstreamRefused):
            return self._failed(UpstreamFailure.REFUSED, UpstreamRefused(f"{upstream.name}: {exc}"), str(exc), now)
        if isinstance(exc, UpstreamError):
            return self._failed(UpstreamFailure.ERROR, exc, str(exc), now)
        if isinstance(exc, OSError):
            return self._failed(
                UpstreamFailure.ERROR, BadUpstreamReply(f"{upstream.name}: {exc}"), exc.strerror or str(exc), now
            )
        raise exc

    def on_timer(self, now: float) -> tuple:
        """The deadline armed last: retransmit over UDP, or give the try up."""
        if self.over or self.upstream is None:
            return ()
        if self.tcp or self.try_end - now <= 0.01:
            return self._failed(UpstreamFailure.TIMEOUT, UpstreamTimeout(self.upstream.name), "timeout", now)
        self.sends, self.wait = self.sends + 1, min(self.wait * 2, self.settings.timeout)
        return RESEND, Arm(min(now + self.wait, self.try_end))

    # ---------------------------------------------------------------- transitions

    def _next(self, now: float) -> tuple:
        self.attempt += 1
        live = self.upstreams if not self.given_up else [u for u in self.upstreams if u not in self.given_up]
        remaining = self.end - now
        if self.attempt >= MAX_TRIES or not live or remaining <= 0.01:
            return self._done(self._why())
        upstream = live[self.attempt % len(live)]
        self.upstream, self.started, self.edns, self.tcp = upstream, now, True, self.query.tcp
        self.wait = rto = upstream.rto(self.settings.timeout)
        if self.alone:
            return self._send(now, remaining)
        return self._send(now, min(rto * 2 ** (self.attempt // len(live)), self.settings.timeout, remaining))

    def _send(self, now: float, budget: float) -> tuple:
        """A new exchange with self.upstream (self.wait: its RTO): a fresh ID, our OPT (unless falling back),
        0x20 if configured."""
        self.budget, self.first, self.sends = budget, now, 1
        self.data = data = self._outgoing()
        if self.tcp:
            self.try_end = now + max(0.05, budget)
            return Send(self.upstream, data, True), Arm(self.try_end)
        self.try_end = try_end = now + budget
        return Send(self.upstream, data, False), Arm(min(now + self.wait, try_end))

    def renumber(self, qid: bytes) -> bytes:
        """Give the exchange just sent another ID (the driver's socket had this one in flight); the new query."""
        self.data = qid + self.data[2:]
        return self.data

    def _answered(self, reply: bytes, now: float) -> tuple:
        query, upstream = self.query, self.upstream
        rcode = reply[3] & 0xF
        name = rcode_name(rcode)
        if rcode in (wire.FORMERR, wire.NOTIMP):
            self.observe(upstream, name, now - self.started)
            upstream.answered(now)
            if self.edns:  # no EDNS there: ask plainly
                self.edns = False
                self.wait = upstream.rto(self.settings.timeout)
                return self._send(now, max(0.05, self.end - now))
            # the client's query was fine and went out plainly: this upstream cannot serve it, another may
            return self._give_up(BadUpstreamReply(f"{upstream.name}: {name}"), name, now)
        upstream.answered(now)
        self.observe(upstream, name, now - self.started)
        if rcode == wire.REFUSED:  # a forwarder's reason to fail over, not an answer for the client
            return self._give_up(UpstreamRefused(f"{upstream.name}: REFUSED"), "REFUSED", now)
        if rcode == 0 and cname_loop(reply, query.qend):  # Unbound: SERVFAIL; another upstream has the same data
            return self._done(BadUpstreamReply(f"{upstream.name}: CNAME loop for {query.qname}"))
        if not query.edns:  # asked with our OPT for the loop path: the client, who sent none, gets none
            reply = without_opt(reply, query.qend)
        if reply[4:6] == b"\x00\x00":  # a question-less SERVFAIL: the question back, for the client
            reply = wire.with_question(reply, query.data[12 : query.qend])
        return self._done(wire.with_id_and_question(reply, query))

    def _give_up(self, error: UpstreamError, why: str, now: float) -> tuple:
        """This upstream will not answer this query (it said so): the next, without marking it down."""
        if self.given_up is None:
            self.given_up = set()
        self.given_up.add(self.upstream)
        self.error = error
        self._note(why)
        return self._next(now)

    def _failed(self, kind: str, error: UpstreamError, why: str, now: float) -> tuple:
        """This try failed: note it against the upstream (see Upstream.failed) and go on with the next."""
        upstream = self.upstream
        if kind == UpstreamFailure.REFUSED:
            if self.given_up is None:
                self.given_up = set()
            self.given_up.add(upstream)
        self.error = error
        self._note(why)
        if upstream.failed(kind, self.first, now):
            self.observe(upstream, kind, now - self.started)
        return self._next(now)

    def _note(self, why: str) -> None:
        entry = f"{self.upstream.name} {why[:60]}"
        if self.failures is None:
            self.failures = [entry]
        elif entry not in self.failures:
            self.failures.append(entry)

    def _why(self) -> UpstreamError:
        """The last error, its text naming every upstream that failed and how (bounded: EDE_TEXT_MAX)."""
        error = self.error
        if error is None:
            return UpstreamTimeout("no upstream answered")
        if not self.failures:
            return error
        text = ""
        for i, entry in enumerate(self.failures):
            more = len(self.failures) - i
            if len(text) + len(entry) + 2 > EDE_TEXT_MAX - 12:
                text += f", ... {more} more"
                break
            text = f"{text}, {entry}" if text else entry
        return type(error)(text)

    def _done(self, result: bytes | UpstreamError) -> tuple:
        self.over = True
        return (Done(result),)

    def _outgoing(self) -> bytes:
        """The query as sent upstream: a random ID, the client's RD/CD/AD and question, our own OPT.

        None of the client's EDNS options (COOKIE, NSID, ECS, padding, unknown ones) leave the guard: they belong
        to the client's exchange with us, and an upstream that chokes on one must not be marked down for it.
        """
        query = self.query
        question = query.data[12 : query.qend]
        if self.settings.randomize_case:  # the name only: QTYPE 65 (HTTPS) is the octets 0x00 0x41, an "A"
            name, tail = question[:-4], question[-4:]
            bits = secrets.randbits(len(name))
            question = (
                bytes(c ^ 0x20 if 0x61 <= (c | 0x20) <= 0x7A and (bits >> i) & 1 else c for i, c in enumerate(name))
                + tail
            )
        flags = _U16.pack(query.flags & (wire.RD | wire.CD | wire.AD))
        if self.edns:  # also for a client without EDNS (most MTAs): the loop path must go along
            opt = _opt(query.do, self.path) if self.path else _OWN_OPT[query.do]
            return self.ids() + flags + b"\x00\x01\x00\x00\x00\x00\x00\x01" + question + opt
        return self.ids() + flags + b"\x00\x01\x00\x00\x00\x00\x00\x00" + question
