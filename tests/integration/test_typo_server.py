"""The typo guard end to end: real queries through the running server, a stub upstream, no internet."""

from __future__ import annotations

import json

import dns.edns
import dns.message
import dns.rcode
import pytest

PROTECT = ("army.mil", "gmail.com", "paypal.com")
PAYPAL_CYRILLIC_A = "xn--" + "p\u0430ypal".encode("punycode").decode("ascii") + ".com"  # pаypal.com

BLOCKED = [
    ("army.ml", "army.mil"),  # TLD typo: mil -> ml
    ("mail.army.ml", "army.mil"),  # a host under the typo
    ("arny.mil", "army.mil"),  # keyboard replacement
    ("gmial.com", "gmail.com"),  # transposition
    (PAYPAL_CYRILLIC_A, "paypal.com"),  # IDN homoglyph
]
FORWARDED = ["army.mil", "mail.army.mil", "mail.com"]  # protected, under protected, a real domain near gmail


def _protect_args(*extra: str) -> list[str]:
    args = [a for domain in PROTECT for a in ("--protect", domain)]
    return [*args, *extra]


@pytest.fixture
def typo_guard(upstream, start_guard):
    for name in (*FORWARDED, *(n for n, _ in BLOCKED)):
        for qtype, rdata in (
            ("A", "A 192.0.2.1"),
            ("AAAA", "AAAA 2001:db8::1"),
            ("MX", "MX 10 mx.example."),
            ("TXT", 'TXT "v=spf1 -all"'),
        ):
            upstream.on(name, qtype, f"{name}. 300 {rdata}")
    return start_guard(*_protect_args("--upstream", upstream.address))


def _ede(reply: dns.message.Message) -> list[dns.edns.EDEOption]:
    return [o for o in reply.options if o.otype == dns.edns.OptionType.EDE]


def test_pa_look_alike_is_punycode():
    assert PAYPAL_CYRILLIC_A.startswith("xn--") and PAYPAL_CYRILLIC_A.isascii()
    assert PAYPAL_CYRILLIC_A != "paypal.com"


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize(("qname", "protected"), BLOCKED, ids=[n for n, _ in BLOCKED])
def test_neighbours_get_nxdomain_with_ede_and_are_never_forwarded(typo_guard, upstream, qname, protected, tcp):
    reply = typo_guard.query(qname, "A", tcp=tcp, use_edns=0)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert not reply.answer
    ede = _ede(reply)
    assert len(ede) == 1, reply
    assert ede[0].code in (15, 17)  # RFC 8914: Blocked / Filtered
    assert protected in ede[0].text, ede[0].text
    assert upstream.count(qname) == 0


@pytest.mark.parametrize("qname", FORWARDED)
def test_protected_names_and_real_neighbours_are_forwarded(typo_guard, upstream, qname):
    reply = typo_guard.query(qname, "A", use_edns=0)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer[0][0].to_text() == "192.0.2.1"
    assert not _ede(reply)
    assert upstream.count(qname) == 1


@pytest.mark.parametrize("qtype", ["A", "AAAA", "MX"])
def test_default_typo_qtypes_are_blocked(typo_guard, upstream, qtype):
    reply = typo_guard.query("gmial.com", qtype, use_edns=0)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert "gmail.com" in _ede(reply)[0].text
    assert upstream.count("gmial.com") == 0


def test_txt_is_forwarded_by_default(typo_guard, upstream):
    reply = typo_guard.query("gmial.com", "TXT", use_edns=0)  # SPF lookups of a typo domain are harmless
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer[0][0].to_text() == '"v=spf1 -all"'
    assert upstream.count("gmial.com") == 1


def test_block_without_edns_is_still_nxdomain(typo_guard, upstream):
    reply = typo_guard.query("army.ml", "A")  # no OPT record: no room for an EDE, the rcode still says it
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert upstream.count("army.ml") == 0


def test_class_policy_log_only_forwards_and_logs(tmp_path, upstream, start_guard):
    upstream.on("gmial.com", "A", "gmial.com. 300 A 192.0.2.77")
    upstream.on("arny.mil", "A", "arny.mil. 300 A 192.0.2.78")
    cfg = tmp_path / "guard.toml"
    cfg.write_text('[typo]\nclasses = { transposition = "log-only" }\n')
    guard = start_guard(*_protect_args("--config", str(cfg), "--upstream", upstream.address))
    reply = guard.query("gmial.com", "A", use_edns=0)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer[0][0].to_text() == "192.0.2.77"
    assert upstream.count("gmial.com") == 1
    blocked = guard.query("arny.mil", "A", use_edns=0)  # other classes still block
    assert blocked.rcode() == dns.rcode.NXDOMAIN
    assert upstream.count("arny.mil") == 0
    assert guard.stop() == 0  # flushes the event log
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    logged = [e for e in events if e["qname"] == "gmial.com"]
    assert logged and logged[0]["action"] == "log-only" and logged[0]["class"] == "transposition"
    assert logged[0]["protected"] == "gmail.com"


def test_protected_list_from_zones_dir(tmp_path, upstream, start_guard):
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "mil.protect").write_text("# protected domains\narmy.mil\n")
    guard = start_guard("--upstream", upstream.address, zones=zones)
    reply = guard.query("army.ml", "A", use_edns=0)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert "army.mil" in _ede(reply)[0].text
    assert upstream.count("army.ml") == 0
