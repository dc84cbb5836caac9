"""Render a synthesised Decision as a reply: NXDOMAIN/NODATA with SOA, sink records, local data, EDE; pure."""

from __future__ import annotations

from dataclasses import dataclass

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from . import wire
from .codes import Action
from .policy import Decision

EDE_BLOCKED, EDE_FILTERED = dns.edns.EDECode.BLOCKED, dns.edns.EDECode.FILTERED


@dataclass(frozen=True)
class Sink:
    """Where the `sink` action points typo lookups: an internal host that logs and keeps the mail."""

    ipv4: str = "127.0.0.2"
    ipv6: str | None = None
    mail_host: str = "sink.resolverguard.internal."
    ttl: int = 60


def render(decision: Decision, query: wire.Query, sink: Sink) -> bytes | None:
    """The reply bytes for a synthesised decision; None means send nothing (drop)."""
    if decision.action == Action.DROP:
        return None
    if decision.action == Action.TCP_ONLY:
        return wire.reply_for(query, wire.TC)
    reply = _response(query)
    reply.flags &= ~dns.flags.AA
    qname = reply.question[0].name
    action = decision.action
    if action == Action.SINK:
        _sink(reply, qname, query.qtype, sink)
    elif action == Action.LOCAL_DATA:
        records = decision.rpz.records_for(query.qname) if decision.rpz else []
        wanted = [r for r in records if r.rdtype in (query.qtype, dns.rdatatype.CNAME)]
        reply.answer.extend(_renamed(r, qname) for r in wanted)
    elif action == Action.REFUSED:
        reply.set_rcode(dns.rcode.REFUSED)
    elif action == Action.NXDOMAIN:
        reply.set_rcode(dns.rcode.NXDOMAIN)
    if action in (Action.NXDOMAIN, Action.NODATA) or (action in (Action.SINK, Action.LOCAL_DATA) and not reply.answer):
        reply.authority.append(_soa(decision, qname, sink.ttl))
    if query.edns:
        code = EDE_BLOCKED if decision.typo is not None or action != Action.LOCAL_DATA else EDE_FILTERED
        options = [dns.edns.EDEOption(code, decision.reason[:300])]
        reply.use_edns(0, ednsflags=dns.flags.DO if query.do else 0, payload=1232, options=options)
    return reply.to_wire()


def _sink(reply: dns.message.Message, qname: dns.name.Name, qtype: int, sink: Sink) -> None:
    IN = dns.rdataclass.IN
    if qtype == dns.rdatatype.A:
        reply.answer.append(dns.rrset.from_text(qname, sink.ttl, IN, "A", sink.ipv4))
    elif qtype == dns.rdatatype.AAAA and sink.ipv6:
        reply.answer.append(dns.rrset.from_text(qname, sink.ttl, IN, "AAAA", sink.ipv6))
    elif qtype == dns.rdatatype.MX:
        reply.answer.append(dns.rrset.from_text(qname, sink.ttl, IN, "MX", f"10 {sink.mail_host}"))
        host = dns.name.from_text(sink.mail_host)
        reply.additional.append(dns.rrset.from_text(host, sink.ttl, IN, "A", sink.ipv4))
        if sink.ipv6:
            reply.additional.append(dns.rrset.from_text(host, sink.ttl, IN, "AAAA", sink.ipv6))


def sink_host(query: wire.Query, sink: Sink) -> bytes | None:
    """The answer for the sink mail host itself (its A/AAAA), or None for any other name.

    MTAs look the MX host up on their own rather than trusting the additional section, so the guard must
    answer for it: forwarded upstream it would fail and the mail would be deferred, not sunk.
    """
    if query.qname != sink.mail_host.rstrip(".").lower():
        return None
    reply = _response(query)
    reply.flags |= dns.flags.AA
    qname = reply.question[0].name
    IN = dns.rdataclass.IN
    if query.qtype == dns.rdatatype.A:
        reply.answer.append(dns.rrset.from_text(qname, sink.ttl, IN, "A", sink.ipv4))
    elif query.qtype == dns.rdatatype.AAAA and sink.ipv6:
        reply.answer.append(dns.rrset.from_text(qname, sink.ttl, IN, "AAAA", sink.ipv6))
    if not reply.answer:  # NODATA: the name exists, this type does not
        reply.authority.append(_soa_at(qname, sink.ttl))
    if query.edns:
        reply.use_edns(0, ednsflags=dns.flags.DO if query.do else 0, payload=1232)
    return reply.to_wire()


def _response(query: wire.Query) -> dns.message.Message:
    # header and question only: the rest (EDNS is already in `query`) may hold records dnspython rejects
    msg = dns.message.from_wire(query.data[:4] + b"\x00\x01\x00\x00\x00\x00\x00\x00" + query.data[12 : query.qend])
    reply = dns.message.make_response(msg, recursion_available=True)
    reply.flags |= msg.flags & dns.flags.CD  # CD is echoed like RD (RFC 4035 3.2.2), blocked answers too
    return reply


def _renamed(rrset: dns.rrset.RRset, qname: dns.name.Name) -> dns.rrset.RRset:
    out = dns.rrset.RRset(qname, rrset.rdclass, rrset.rdtype)
    out.update(rrset)
    out.ttl = rrset.ttl
    return out


def _soa(decision: Decision, qname: dns.name.Name, ttl: int) -> dns.rrset.RRset:
    """A synthetic SOA so MTAs cache the negative answer (RFC 2308) for the sink TTL."""
    return _soa_at(dns.name.from_text(decision.typo.neighbour) if decision.typo else qname, ttl)


def _soa_at(owner: dns.name.Name, ttl: int) -> dns.rrset.RRset:
    return dns.rrset.from_text(
        owner, ttl, "IN", "SOA", f"resolverguard.invalid. hostmaster.resolverguard.invalid. 1 3600 600 86400 {ttl}"
    )
