"""upstream.resolution: the state machine of one query's way through the upstreams, without sockets or a clock.

Each test feeds events with an injected `now` and checks the actions: retransmission and Karn's rule,
failover and the deadline, the EDNS fallback, TC->TCP, question-less error replies, health, loops.
"""

from __future__ import annotations

import itertools
import struct

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from resolverguard import wire
from resolverguard.errors import BadUpstreamReply, ForwardingLoop, UpstreamRefused, UpstreamTimeout
from resolverguard.upstream import Arm, Done, Resolution, Send, Settings, Upstream
from resolverguard.upstream import resolution as res_mod
from resolverguard.upstream.pool import INITIAL_RTO

A, B = ("192.0.2.53", 53), ("192.0.2.54", 53)


def query(name="q.example", *, edns=True, tcp=False, options=(), cd=False) -> wire.Query:
    msg = dns.message.make_query(name, "A", use_edns=0 if edns else False, options=list(options) or None, id=4242)
    if cd:
        msg.flags |= dns.flags.CD
    return wire.parse_query(msg.to_wire(), "198.51.100.7", tcp)


class Run:
    """One resolution with its upstreams, a counter for IDs and the observations it reports."""

    def __init__(self, q: wire.Query, *upstreams: Upstream, timeout=1.0, deadline=2.5) -> None:
        self.upstreams = list(upstreams) or [Upstream(*A)]
        self.seen: list[tuple[str, str]] = []
        ids = (struct.pack("!H", i) for i in itertools.count(100))
        self.r = Resolution(
            q,
            self.upstreams,
            Settings(timeout, deadline),
            ids.__next__,
            lambda u, what, s: self.seen.append((u.name, what)),
        )


def reply(sent: bytes, rcode=dns.rcode.NOERROR, *, flags=0, answers=()) -> bytes:
    msg = dns.message.make_response(dns.message.from_wire(sent))
    msg.set_rcode(rcode)
    msg.flags |= flags
    for line in answers:
        name, ttl, rtype, rdata = line.split(" ", 3)
        msg.answer.append(dns.rrset.from_text(name, int(ttl), "IN", rtype, rdata))
    return msg.to_wire()


def questionless(sent: bytes, rcode: int, flags: int = 0) -> bytes:
    return sent[:2] + struct.pack("!H", wire.QR | flags | rcode) + b"\x00" * 8


def sends(actions) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


def arm(actions) -> float:
    [a] = [a for a in actions if isinstance(a, Arm)]
    return a.deadline


def done(actions):
    assert actions is not None and len(actions) == 1 and isinstance(actions[0], Done), actions
    return actions[0].result


def test_answer_is_readdressed_to_the_client_and_times_the_upstream():
    run = Run(query())
    actions = run.r.start(10.0)
    [send] = sends(actions)
    assert send.upstream is run.upstreams[0] and not send.tcp and send.data[:2] != b"\x10\x92"  # not the client's ID
    assert arm(actions) == pytest.approx(10.0 + INITIAL_RTO)
    got = done(run.r.on_reply(reply(send.data), A, 10.05))
    assert dns.message.from_wire(got).id == 4242
    assert run.upstreams[0].srtt == pytest.approx(0.05) and run.upstreams[0].up is True
    assert run.seen == [("192.0.2.53:53", "NOERROR")]


def test_one_upstream_retransmits_with_doubled_waits_and_karn_skips_the_sample():
    run = Run(query())
    actions = run.r.start(0.0)
    [send] = sends(actions)
    first = arm(actions)
    actions = run.r.on_timer(first)
    assert actions[0] is res_mod.RESEND  # the same datagram again, on the same socket
    assert arm(actions) == pytest.approx(first + 2 * INITIAL_RTO)
    got = done(run.r.on_reply(reply(send.data), A, first + 0.1))  # a reply to either copy counts
    assert dns.message.from_wire(got).rcode() == dns.rcode.NOERROR
    assert run.upstreams[0].srtt is None  # Karn: after a retransmission the RTT is unknown


def test_retransmission_waits_are_capped_by_timeout_and_the_deadline_ends_it():
    run = Run(query(), timeout=0.5, deadline=1.2)
    actions = run.r.start(0.0)
    deadlines = []
    while not isinstance(actions[0], Done):
        deadlines.append(arm(actions))
        actions = run.r.on_timer(deadlines[-1])
    assert deadlines == pytest.approx([0.376, 0.876, 1.2])  # 0.376, +0.5 (capped), then the deadline
    error = actions[0].result
    assert isinstance(error, UpstreamTimeout) and error.ede == 22
    assert run.upstreams[0].up is False and ("192.0.2.53:53", "timeout") in run.seen


def test_failover_to_the_second_upstream_marks_the_first_down_and_names_both_in_the_error():
    run = Run(query(), Upstream(*A), Upstream(*B), timeout=0.3, deadline=1.0)
    actions = run.r.start(0.0)
    assert sends(actions)[0].upstream.peer == A
    actions = run.r.on_timer(arm(actions))
    [send] = sends(actions)
    assert send.upstream.peer == B
    assert run.upstreams[0].up is False and run.upstreams[0].down_until > 0
    while not isinstance(actions[0], Done):
        actions = run.r.on_timer(arm(actions))
    error = actions[0].result
    assert isinstance(error, UpstreamTimeout)
    assert str(error) == "192.0.2.53:53 timeout, 192.0.2.54:53 timeout"  # EDE 22 names each, not the last


def test_a_marked_down_upstream_is_ranked_last_and_still_tried():
    down, up = Upstream(*A), Upstream(*B)
    down.down_until = 5.0
    run = Run(query(), down, up)
    assert sends(run.r.start(1.0))[0].upstream is up
    run = Run(query(), down, up)
    assert sends(run.r.start(6.0))[0].upstream is down  # the backoff is over: configured order again


def test_ede_text_is_bounded():
    ups = [Upstream(f"192.0.2.{i}", 5300 + i) for i in range(40)]
    run = Run(query(), *ups, timeout=0.2, deadline=100)
    actions = run.r.start(0.0)
    now = 0.0
    while not isinstance(actions[0], Done):
        now = arm(actions)
        actions = run.r.on_timer(now)
    text = str(actions[0].result)
    assert len(text) <= res_mod.EDE_TEXT_MAX and text.startswith("192.0.2.0:5300 timeout, 192.0.2.1:5301 timeout")
    assert text.endswith("more")


def test_formerr_without_question_to_edns_falls_back_to_a_plain_query_same_upstream():
    run = Run(query())
    [send] = sends(run.r.start(0.0))
    assert struct.unpack_from("!H", send.data, 10)[0] == 1  # our OPT
    actions = run.r.on_reply(questionless(send.data, wire.FORMERR), A, 0.01)
    [plain] = sends(actions)
    assert plain.upstream.peer == A and struct.unpack_from("!H", plain.data, 10)[0] == 0  # no OPT now
    assert plain.data[:2] != send.data[:2]  # a new exchange, a new ID
    got = done(run.r.on_reply(reply(plain.data), A, 0.02))
    assert dns.message.from_wire(got).rcode() == dns.rcode.NOERROR
    assert run.upstreams[0].up is True


@pytest.mark.parametrize("rcode", [wire.FORMERR, wire.NOTIMP])
def test_formerr_to_a_plain_query_is_servfail_for_the_client_not_formerr(rcode):
    run = Run(query(edns=False), Upstream(*A), Upstream(*B))
    [send] = sends(run.r.start(0.0))
    [plain] = sends(run.r.on_reply(reply(send.data, rcode), A, 0.01))  # our OPT, maybe: asked plainly
    assert plain.upstream.peer == A and struct.unpack_from("!H", plain.data, 10)[0] == 0
    [other] = sends(run.r.on_reply(reply(plain.data, rcode), A, 0.02))
    assert other.upstream.peer == B  # this upstream cannot serve the query even so: another may
    [plain] = sends(run.r.on_reply(questionless(other.data, rcode), B, 0.03))
    error = done(run.r.on_reply(questionless(plain.data, rcode), B, 0.04))
    assert isinstance(error, BadUpstreamReply) and error.ede == 23
    assert str(error) == f"192.0.2.53:53 {dns.rcode.to_text(rcode)}, 192.0.2.54:53 {dns.rcode.to_text(rcode)}"
    assert all(u.up is True for u in run.upstreams)  # the query was odd, not the upstreams


@pytest.mark.parametrize("rcode", [wire.REFUSED, wire.SERVFAIL])
def test_questionless_error_replies_are_accepted_and_leave_health_alone(rcode):
    run = Run(query(edns=False), Upstream(*A), Upstream(*B))
    [send] = sends(run.r.start(0.0))
    actions = run.r.on_reply(questionless(send.data, rcode), A, 0.004)
    assert actions is not None  # accepted (before: taken for a spoof, 2.5 s and a down upstream)
    if rcode == wire.SERVFAIL:  # the upstream's answer for the client
        assert dns.message.from_wire(done(actions)).rcode() == dns.rcode.SERVFAIL
    else:
        assert sends(actions)[0].upstream.peer == B
    assert run.upstreams[0].up is True and run.upstreams[0].failures == 0


def test_refused_by_every_upstream_ends_at_once():
    run = Run(query(), Upstream(*A), Upstream(*B))
    [send] = sends(run.r.start(0.0))
    [send] = sends(run.r.on_reply(reply(send.data, dns.rcode.REFUSED), A, 0.01))
    error = done(run.r.on_reply(reply(send.data, dns.rcode.REFUSED), B, 0.02))
    assert isinstance(error, UpstreamRefused) and str(error) == "192.0.2.53:53 REFUSED, 192.0.2.54:53 REFUSED"


def test_truncated_reply_is_asked_again_over_tcp_even_when_it_does_not_parse():
    for cut in (
        lambda s: reply(s, flags=dns.flags.TC),
        lambda s: questionless(s, 0, wire.TC),
        lambda s: (reply(s, flags=dns.flags.TC))[:20],
    ):
        run = Run(query())
        [send] = sends(run.r.start(0.0))
        actions = run.r.on_reply(cut(send.data), A, 0.01)
        [tcp] = sends(actions)
        assert tcp.tcp and tcp.upstream.peer == A and tcp.data == send.data
        got = done(run.r.on_reply(reply(tcp.data), A, 0.05))
        assert dns.message.from_wire(got).rcode() == dns.rcode.NOERROR


def test_tcp_try_times_out_into_the_next_upstream():
    run = Run(query(tcp=True), Upstream(*A), Upstream(*B), timeout=0.3)
    actions = run.r.start(0.0)
    assert sends(actions)[0].tcp
    [send] = sends(run.r.on_timer(arm(actions)))
    assert send.tcp and send.upstream.peer == B


def test_replies_from_elsewhere_or_for_another_question_are_not_taken():
    run = Run(query())
    [send] = sends(run.r.start(0.0))
    assert run.r.on_reply(reply(send.data), ("203.0.113.9", 53), 0.01) is None
    assert run.r.on_reply(reply(send.data), (A[0], 5353), 0.01) is None
    other = reply(dns.message.make_query("evil.example", "A", id=int.from_bytes(send.data[:2], "big")).to_wire())
    assert run.r.on_reply(other, A, 0.01) is None
    assert run.r.on_reply(questionless(send.data, 0), A, 0.01) is None  # NOERROR needs the question
    assert run.seen == [("192.0.2.53:53", "wrong_source")] * 2 + [("192.0.2.53:53", "mismatch")] * 2
    assert done(run.r.on_reply(reply(send.data), A, 0.02))


def test_icmp_port_unreachable_gives_the_upstream_up_for_this_query():
    run = Run(query(), Upstream(*A), Upstream(*B))
    [send] = sends(run.r.start(0.0))
    [send] = sends(run.r.on_error(UpstreamRefused("port unreachable"), 0.001))
    assert send.upstream.peer == B and run.upstreams[0].up is False
    error = done(run.r.on_error(UpstreamRefused("port unreachable"), 0.002))
    assert isinstance(error, UpstreamRefused)


def test_a_failed_try_does_not_mark_an_upstream_down_that_answers_other_queries():
    up = Upstream(*A)
    odd, normal = Run(query("odd.example", edns=False), up), Run(query("fine.example"), up)
    odd_actions = odd.r.start(0.0)
    [send] = sends(normal.r.start(0.1))
    done(normal.r.on_reply(reply(send.data), A, 0.11))  # sent after the odd query, answered
    actions = odd_actions
    while not isinstance(actions[0], Done):
        actions = odd.r.on_timer(arm(actions))
    assert isinstance(actions[0].result, UpstreamTimeout)
    assert up.up is True and up.failures == 0 and ("192.0.2.53:53", "timeout") not in odd.seen
    alone = Run(query("gone.example"), up)  # nothing answered since this one went out: now it is down
    actions = alone.r.start(5.0)
    while not isinstance(actions[0], Done):
        actions = alone.r.on_timer(arm(actions))
    assert up.up is False


def test_cname_loop_in_the_answer_is_servfail():
    run = Run(query("a.example"))
    [send] = sends(run.r.start(0.0))
    looped = reply(send.data, answers=["a.example. 300 CNAME b.example.", "b.example. 300 CNAME A.example."])
    error = done(run.r.on_reply(looped, A, 0.01))
    assert isinstance(error, BadUpstreamReply) and "CNAME loop" in str(error)
    run = Run(query("a.example"))
    [send] = sends(run.r.start(0.0))
    chain = reply(send.data, answers=["a.example. 300 CNAME b.example.", "b.example. 300 A 192.0.2.1"])
    assert isinstance(done(run.r.on_reply(chain, A, 0.01)), bytes)


def _path(data: bytes) -> bytes | None:
    msg = dns.message.from_wire(data)
    return next((o.data for o in msg.options if o.otype == res_mod.LOOP_OPTION), None)


def test_every_edns_query_carries_the_loop_path_and_a_query_that_went_through_this_guard_is_refused():
    run = Run(query())
    [send] = sends(run.r.start(0.0))
    assert _path(send.data) == res_mod.TOKEN
    other = b"\x01\x02\x03\x04"
    came = query(options=[dns.edns.GenericOption(res_mod.LOOP_OPTION, other)])  # from another guard: on
    [send] = sends(Run(came).r.start(0.0))
    assert _path(send.data) == other + res_mod.TOKEN
    back = query(options=[dns.edns.GenericOption(res_mod.LOOP_OPTION, other + res_mod.TOKEN)])
    assert isinstance(done(Run(back).r.start(0.0)), ForwardingLoop)  # A -> B -> A: refused, nothing sent
    far = query(options=[dns.edns.GenericOption(res_mod.LOOP_OPTION, bytes(range(4 * res_mod.MAX_HOPS)))])
    assert isinstance(done(Run(far).r.start(0.0)), ForwardingLoop)


def test_client_options_do_not_leave_the_guard_and_cd_goes_along():
    q = query(options=[dns.edns.GenericOption(10, b"12345678")], cd=True)  # a COOKIE
    [send] = sends(Run(q).r.start(0.0))
    msg = dns.message.from_wire(send.data)
    assert [o.otype for o in msg.options] == [res_mod.LOOP_OPTION] and msg.flags & dns.flags.CD


def test_a_client_without_edns_gets_no_opt_although_the_guard_asked_with_one():
    run = Run(query(edns=False))
    [send] = sends(run.r.start(0.0))
    assert _path(send.data) == res_mod.TOKEN  # the loop path goes along for plain clients too (most MTAs)
    up = dns.message.make_response(dns.message.from_wire(send.data))
    up.answer.append(dns.rrset.from_text("q.example.", 300, "IN", "A", "192.0.2.1"))
    up.use_edns(0, 0, 1232, options=[dns.edns.EDEOption(3, "stale")])
    got = dns.message.from_wire(done(run.r.on_reply(up.to_wire(), A, 0.01)))
    assert got.edns == -1 and got.answer[0][0].to_text() == "192.0.2.1"
