"""export.render: the hand-written AXFR renderer against dnspython's renderer, read back by dnspython and dnslib."""

from __future__ import annotations

import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from resolverguard.export import Export, Record
from resolverguard.export.render import LIMIT, axfr_records, finish, zone_messages
from tests.twoparsers import both

ORIGIN = dns.name.from_text("rpz.resolverguard.")
ODD = [
    Record("army.ml", 300, "CNAME", "."),
    Record("*.army.ml", 300, "CNAME", "."),
    Record("Mixed.Case.Example", 60, "CNAME", "rpz-passthru."),
    Record("mixed.case.example", 60, "CNAME", "*."),  # same name in another case: compressed onto the first
    Record("a\\.b.example", 300, "CNAME", "."),  # an escaped dot inside a label
    Record("sp\\032ace.example", 300, "CNAME", "rpz-drop."),
    Record("32.25.2.0.192.rpz-client-ip", 300, "CNAME", "rpz-drop."),
    Record("arny.mil", 300, "MX", "10 sink.guard.invalid."),
    Record("arny.mil", 300, "A", "192.0.2.7"),
    Record("x" * 63 + "." + "y" * 63 + ".example", 300, "TXT", '"long labels"'),
    Record("ex\\195\\169.example", 300, "CNAME", "."),  # a non-ASCII octet: dnspython only
]


def expected(records: list[Record], serial: int = 7) -> set[tuple]:
    export = Export(ORIGIN, serial, 300, (), b"")
    out = set()
    for r in axfr_records(export, records):
        name = ORIGIN if r[0] == "@" else dns.name.from_text(r[0], ORIGIN)
        rdtype = dns.rdatatype.from_text(r[2])
        out.add((name, rdtype, int(r[1]), dns.rdata.from_text(dns.rdataclass.IN, rdtype, r[3], ORIGIN)))
    return out


def read(messages: list[bytes]) -> set[tuple]:
    out = set()
    for data in messages:
        for rrset in dns.message.from_wire(data, one_rr_per_rrset=True).answer:
            out.update((rrset.name, rrset.rdtype, rrset.ttl, rd) for rd in rrset)
    return out


def render(records: list[Record], qname: str = "rpz.resolverguard.") -> list[bytes]:
    query = dns.message.make_query(qname, "AXFR")
    return finish(query, zone_messages(ORIGIN, axfr_records(Export(ORIGIN, 7, 300, (), b""), records)))


def test_odd_owners_read_back_as_written() -> None:
    messages = render(ODD)
    assert read(messages) == expected(ODD)
    assert sum(len(rr) for rr in dns.message.from_wire(messages[0], one_rr_per_rrset=True).answer) == len(ODD) + 3


def test_both_libraries_read_each_message_the_same() -> None:
    records = ODD[:-1] + [Record(f"n{i}.{'sub.' * (i % 4)}example", 300, "CNAME", ".") for i in range(6000)]
    messages = render(records, "RPZ.Resolverguard.")  # the client's spelling is echoed
    assert len(messages) > 1 and all(len(m) <= LIMIT for m in messages)
    total = 0
    for i, data in enumerate(messages):
        view = both(data)  # also: every compression pointer resolves in dnslib as in dnspython
        assert view["qr"] == 1 and view["rcode"] == 0
        assert view["question"] == ([((b"rpz", b"resolverguard"), 252, 1)] if i == 0 else [])
        total += len(view["answer"])
    assert total == len(records) + 3
    assert dns.message.from_wire(messages[0]).question[0].name.labels[0] == b"RPZ"
    assert read(messages) == expected(records)


def test_names_past_the_pointer_limit_are_written_in_full() -> None:
    # 1800 distinct 30-octet names fill one message well past offset 0x3FFF; a later owner under one of
    # the late names must not point there (a pointer holds 14 bits), and still reads back right
    records = [Record(f"{'p' * 20}{i:05d}.example", 300, "CNAME", ".") for i in range(1800)]
    records += [Record(f"w.{'p' * 20}01799.example", 300, "CNAME", ".")]
    messages = render(records)
    assert len(messages[0]) > 0x4000
    assert read(messages) == expected(records)


@pytest.mark.parametrize("bad", ["a" * 64 + ".example", "a..example"])
def test_a_bad_owner_raises_instead_of_rendering_garbage(bad: str) -> None:
    with pytest.raises(dns.name.EmptyLabel if ".." in bad else dns.name.LabelTooLong):
        render([Record(bad, 300, "CNAME", ".")])
