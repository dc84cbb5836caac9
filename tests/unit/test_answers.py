"""answers.render: synthesised replies for every action, their SOA, sink records and Extended DNS Errors."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
from corefix import query, table

from resolverguard.answers import EDE_BLOCKED, EDE_FILTERED, Sink, render
from resolverguard.codes import Action, Verdict
from resolverguard.policy import Decision
from resolverguard.typo import TypoMatch

TYPO = TypoMatch("mail.army.ml", "army.ml", "army.mil", "tld_typo", 1, "block")
SINK = Sink(ipv4="192.0.2.53", ipv6="2001:db8::53", mail_host="sink.example.", ttl=30)


def typo(action: Action) -> Decision:
    return Decision(action, Verdict.BLOCKED_TYPO, typo=TYPO)


def rendered(decision: Decision, q=None, sink: Sink = SINK) -> dns.message.Message:
    q = q or query("mail.army.ml")
    data = render(decision, q, sink)
    assert data is not None
    reply = dns.message.from_wire(data)
    assert reply.id == q.id and reply.question[0].name.to_text() == "mail.army.ml."
    return reply


def texts(section) -> list[str]:
    return sorted(f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rd}" for rrset in section for rd in rrset)


def test_nxdomain_carries_a_soa_for_the_neighbour_with_the_sink_ttl():
    reply = rendered(typo(Action.NXDOMAIN))
    assert reply.rcode() == dns.rcode.NXDOMAIN and not reply.answer
    assert reply.flags & dns.flags.QR and reply.flags & dns.flags.RA and not reply.flags & dns.flags.AA
    soa = reply.authority[0]
    assert soa.name.to_text() == "army.ml." and soa.rdtype == dns.rdatatype.SOA and soa.ttl == 30
    assert soa[0].minimum == 30


def test_nodata_and_refused():
    nodata = rendered(typo(Action.NODATA))
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority
    refused = rendered(typo(Action.REFUSED))
    assert refused.rcode() == dns.rcode.REFUSED and not refused.authority


def test_drop_sends_nothing_and_tcp_only_truncates():
    assert render(typo(Action.DROP), query("mail.army.ml"), SINK) is None
    tc = rendered(Decision(Action.TCP_ONLY, Verdict.BLOCKED_OVERRIDE))
    assert tc.flags & dns.flags.TC and not tc.answer


def test_sink_answers_a_aaaa_and_mx_with_the_sink_host():
    assert texts(rendered(typo(Action.SINK)).answer) == ["mail.army.ml. A 192.0.2.53"]
    assert texts(rendered(typo(Action.SINK), query("mail.army.ml", "AAAA")).answer) == [
        "mail.army.ml. AAAA 2001:db8::53"
    ]
    mx = rendered(typo(Action.SINK), query("mail.army.ml", "MX"))
    assert texts(mx.answer) == ["mail.army.ml. MX 10 sink.example."]
    assert texts(mx.additional) == ["sink.example. A 192.0.2.53", "sink.example. AAAA 2001:db8::53"]


def test_sink_without_a_record_for_the_type_is_nodata():
    reply = rendered(typo(Action.SINK), query("mail.army.ml", "AAAA"), Sink(ipv4="192.0.2.53"))
    assert not reply.answer and reply.authority[0].rdtype == dns.rdatatype.SOA
    assert not rendered(typo(Action.SINK), query("mail.army.ml", "TXT")).answer


def test_local_data_is_renamed_to_the_query_and_filtered_by_type():
    hit = table('mail.army.ml A 192.0.2.9\nmail.army.ml TXT "kept"\n').lookup("mail.army.ml")
    local = Decision(Action.LOCAL_DATA, Verdict.BLOCKED_OVERRIDE, rpz=hit)
    assert texts(rendered(local).answer) == ["mail.army.ml. A 192.0.2.9"]
    empty = rendered(local, query("mail.army.ml", "MX"))
    assert not empty.answer and empty.authority[0].name.to_text() == "mail.army.ml."


def test_extended_dns_error_only_with_edns():
    assert rendered(typo(Action.NXDOMAIN)).edns < 0
    reply = rendered(typo(Action.NXDOMAIN), query("mail.army.ml", use_edns=0, want_dnssec=True))
    [ede] = [o for o in reply.options if o.otype == dns.edns.EDE]
    assert ede.code == EDE_BLOCKED and "army.mil" in ede.text
    assert reply.ednsflags & dns.flags.DO
    hit = table("mail.army.ml A 192.0.2.9\n").lookup("mail.army.ml")
    local = rendered(Decision(Action.LOCAL_DATA, Verdict.BLOCKED_OVERRIDE, rpz=hit), query("mail.army.ml", use_edns=0))
    assert [o.code for o in local.options if o.otype == dns.edns.EDE] == [EDE_FILTERED]
