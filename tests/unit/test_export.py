"""resolverguard.export: overrides + typo neighbours → one RPZ zone; serials; AXFR replies."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest

from resolverguard.errors import ConfigError
from resolverguard.export import SerialStore, axfr_response, build_rpz, render_rpz
from resolverguard.rpz import PolicyTable, load_rpz, load_rpz_text

HEAD = "$ORIGIN ov.test.\n$TTL 300\n@ SOA ns.x.invalid. h.x.invalid. 1 3600 600 86400 60\n  NS ns.x.invalid.\n"
OVERRIDES = """\
ok.partner.ml        CNAME rpz-passthru.
*.ok.partner.ml      CNAME rpz-passthru.
arny.mil             MX 10 sink.guard.invalid.
*.trusted.ml         CNAME rpz-passthru.
32.25.2.0.192.rpz-client-ip CNAME rpz-drop.
phish.example        CNAME .
"""
NEIGHBOURS = {
    "army.mil": ["army.ml", "arny.mil", "ok.partner.ml", "x.trusted.ml", "trusted.ml"],
    "gmail.com": ["gmial.com", "GMAIL.CO.", "gmial.com"],
}
ORIGIN = "rpz.resolverguard."


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table(tmp_path: Path) -> PolicyTable:
    path = tmp_path / "10-overrides.rpz"
    path.write_text(HEAD + OVERRIDES)
    return PolicyTable([load_rpz(path)])


def export_table(text: str) -> PolicyTable:
    return PolicyTable([load_rpz_text(text, "export.rpz", name="export")])


def test_parseable_by_dnspython(table: PolicyTable) -> None:
    text = render_rpz(table, NEIGHBOURS, serial=7)
    zone = dns.zone.from_text(text, origin=None, relativize=False)  # check_origin: SOA and NS present
    assert zone.origin == dns.name.from_text(ORIGIN)
    assert zone.get_rdataset(zone.origin, "SOA")[0].serial == 7


# qname, client → expected action in the exported zone (None: not in it)
DECISIONS = [
    ("army.ml", None, "nxdomain"),
    ("www.army.ml", None, "nxdomain"),
    ("gmial.com", None, "nxdomain"),
    ("mail.gmail.co", None, "nxdomain"),  # normalised: case and final dot
    ("ok.partner.ml", None, "passthru"),  # the override, not the neighbour
    ("mx.ok.partner.ml", None, "passthru"),
    ("x.trusted.ml", None, "passthru"),  # a wildcard override above the neighbour keeps winning
    ("www.x.trusted.ml", None, "passthru"),
    ("trusted.ml", None, "nxdomain"),  # the wildcard override does not cover the name itself
    ("arny.mil", None, "local-data"),  # local data override kept
    ("www.arny.mil", None, "nxdomain"),
    ("phish.example", None, "nxdomain"),
    ("army.mil", None, None),
    ("mail.army.mil", None, None),
    ("army.ml", "192.0.2.25", "drop"),  # client-ip override kept
]


@pytest.mark.parametrize(("qname", "client", "action"), DECISIONS)
def test_export_keeps_overrides_winning(table: PolicyTable, qname: str, client: str | None, action: str | None) -> None:
    exported = export_table(render_rpz(table, NEIGHBOURS, serial=1))
    hit = exported.lookup(qname, ipaddress.ip_address(client) if client else None)
    assert (hit.action if hit else None) == action
    # and the guard itself (overrides, then typo guard) agrees wherever an override decides
    if (own := table.lookup(qname, ipaddress.ip_address(client) if client else None)) is not None:
        assert hit is not None and hit.action == own.action


def test_local_data_exported_as_given(table: PolicyTable) -> None:
    exported = export_table(render_rpz(table, NEIGHBOURS, serial=1))
    hit = exported.lookup("arny.mil")
    assert hit is not None
    assert [r.to_text() for r in hit.records_for("arny.mil")] == ["arny.mil. 300 IN MX 10 sink.guard.invalid."]


def test_protected_domain_never_exported() -> None:
    text = render_rpz(None, {"army.mil": ["army.mil", "mil", "army.ml"]}, serial=1)
    exported = export_table(text)
    assert exported.lookup("army.mil") is None
    assert exported.lookup("mail.army.mil") is None
    assert exported.lookup("mil") is not None  # the neighbour itself, but not *.mil


@pytest.mark.parametrize(
    ("action", "expected"), [("nxdomain", "nxdomain"), ("nodata", "nodata"), ("drop", "drop"), ("tcp-only", "tcp-only")]
)
def test_export_action(action: str, expected: str) -> None:
    exported = export_table(render_rpz(None, NEIGHBOURS, serial=1, action=action))
    for qname in ("army.ml", "www.army.ml"):
        hit = exported.lookup(qname)
        assert hit is not None and hit.action == expected


@pytest.mark.parametrize("action", ["passthru", "local-data", "NXDOMAIN"])
def test_bad_action_is_config_error(action: str) -> None:
    with pytest.raises(ConfigError, match="export action"):
        render_rpz(None, NEIGHBOURS, action=action)


def test_serial_grows_when_content_changes(table: PolicyTable) -> None:
    clock = FakeClock(1_800_000_000)
    store = SerialStore(clock=clock)
    first = render_rpz(table, NEIGHBOURS, serials=store)
    same = render_rpz(table, NEIGHBOURS, serials=store)
    changed = render_rpz(table, {**NEIGHBOURS, "navy.mil": ["nvy.mil"]}, serials=store)  # same second
    serials = [dns.zone.from_text(t, origin=None).get_rdataset("@", "SOA")[0].serial for t in (first, same, changed)]
    assert serials == [1_800_000_000, 1_800_000_000, 1_800_000_001]
    clock.now += 3600
    assert store.next(b"other") == 1_800_003_600


def test_serial_grows_with_the_default_store(table: PolicyTable) -> None:
    a = render_rpz(table, NEIGHBOURS)
    b = render_rpz(table, {"navy.mil": ["nvy.mil"]})
    soa = [dns.zone.from_text(t, origin=None).get_rdataset("@", "SOA")[0].serial for t in (a, b)]
    assert soa[1] > soa[0]


def test_serial_continues_from_previous() -> None:
    store = SerialStore(previous=4_000_000_000, clock=FakeClock(1_800_000_000))
    assert store.next(b"x") == 4_000_000_001


def test_progress(table: PolicyTable) -> None:
    calls: list[tuple[int, int]] = []
    render_rpz(
        table, {"x.mil": [f"n{i}.ml" for i in range(2500)]}, serial=1, progress=lambda d, t: calls.append((d, t))
    )
    total = 2500 + 6
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) == 3


def test_empty_export_is_a_valid_zone() -> None:
    calls: list[tuple[int, int]] = []
    text = render_rpz(None, {}, serial=3, progress=lambda d, t: calls.append((d, t)))
    assert export_table(text).rule_count == {"export": 0}
    assert calls == [(0, 0)]


# ---------------------------------------------------------------- AXFR


def transfer(messages: list[bytes]) -> list[dns.rrset.RRset]:
    out = []
    for wire in messages:
        reply = dns.message.from_wire(wire, one_rr_per_rrset=True)
        assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
        out.extend(reply.answer)
    return out


@pytest.mark.parametrize("rdtype", ["AXFR", "IXFR"])
def test_axfr_soa_first_all_records_soa_last(table: PolicyTable, rdtype: str) -> None:
    export = build_rpz(table, NEIGHBOURS, serial=42)
    text = export.text()
    query = dns.message.make_query(ORIGIN, rdtype)
    messages = axfr_response(query, export)
    rrs = transfer(messages)
    assert rrs[0].rdtype == rrs[-1].rdtype == dns.rdatatype.SOA and rrs[0][0].serial == 42
    zone = dns.zone.from_text(text, origin=None, relativize=False)
    expected = {(n, rds.rdtype, rd) for n, rds in zone.iterate_rdatasets() for rd in rds}
    assert {(rr.name, rr.rdtype, rd) for rr in rrs[:-1] for rd in rr} == expected
    assert sum(len(rr) for rr in rrs[:-1]) == len(expected)
    first = dns.message.from_wire(messages[0])
    assert first.id == query.id and first.question[0].rdtype == dns.rdatatype.from_text(rdtype)


def test_axfr_large_zone_spans_messages() -> None:
    export = build_rpz(None, {"x.com": [f"n{i}-{'a' * 55}.com" for i in range(1500)]}, serial=1)
    messages = axfr_response(dns.message.make_query(ORIGIN, "AXFR"), export)
    assert len(messages) > 1 and all(len(m) <= 65535 for m in messages)
    assert sum(len(rr) for rr in transfer(messages)) == 2 * 1500 + 3  # names, *.names, SOA, NS, SOA


@pytest.mark.parametrize(
    ("qname", "rdtype"), [("other.example.", "AXFR"), ("www.rpz.resolverguard.", "AXFR"), (ORIGIN, "A")]
)
def test_axfr_refused_for_other_questions(qname: str, rdtype: str) -> None:
    [wire] = axfr_response(dns.message.make_query(qname, rdtype), build_rpz(None, NEIGHBOURS, serial=1))
    assert dns.message.from_wire(wire).rcode() == dns.rcode.REFUSED


def test_soa_probe_answered() -> None:
    [wire] = axfr_response(dns.message.make_query(ORIGIN, "SOA"), build_rpz(None, NEIGHBOURS, serial=9))
    reply = dns.message.from_wire(wire)
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer[0][0].serial == 9
