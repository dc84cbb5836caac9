"""resolverguard.rpz: RPZ zone text → PolicyTable; actions, triggers, precedence, errors with file:line."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import dns.name
import dns.rdatatype
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resolverguard.errors import ZoneFileError
from resolverguard.rpz import (
    PolicyTable,
    RpzZone,
    encode_client_ip,
    load_rpz,
    load_zone_dir,
    parse_client_ip,
)

REPO = Path(__file__).resolve().parents[2]
HEAD = """$ORIGIN rpz.test.
$TTL 300
@ SOA ns.rpz.invalid. hostmaster.rpz.invalid. 1 3600 600 86400 60
  NS ns.rpz.invalid.
"""  # 4 lines: a body's first line is line 5


def write(tmp_path: Path, name: str, body: str, head: str = HEAD) -> Path:
    path = tmp_path / name
    path.write_text(head + body)
    return path


def zone(tmp_path: Path, body: str, name: str = "z.rpz") -> RpzZone:
    return load_rpz(write(tmp_path, name, body))


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


ACTIONS_BODY = """\
nx.example          CNAME .
nodata.example      CNAME *.
pass.example        CNAME rpz-passthru.
legacy.example      CNAME legacy.example.
legacy2.example     CNAME legacy2.example
drop.example        CNAME rpz-drop.
tcp.example         CNAME rpz-tcp-only.
a.example           A 192.0.2.1
a.example           A 192.0.2.2
mx.example          MX 10 sink.guard.invalid.
mx.example          TXT "sink"
garden.example      CNAME walled.garden.invalid.
prefix.example      CNAME *.sink.guard.invalid.
*.wild.example      CNAME .
"""


@pytest.mark.parametrize(
    ("qname", "action", "owner"),
    [
        ("nx.example", "nxdomain", "nx.example"),
        ("nodata.example", "nodata", "nodata.example"),
        ("pass.example", "passthru", "pass.example"),
        ("legacy.example", "passthru", "legacy.example"),  # CNAME to the trigger's own name
        ("legacy2.example", "passthru", "legacy2.example"),  # CNAME to the owner itself
        ("drop.example", "drop", "drop.example"),
        ("tcp.example", "tcp-only", "tcp.example"),
        ("a.example", "local-data", "a.example"),
        ("mx.example", "local-data", "mx.example"),
        ("garden.example", "local-data", "garden.example"),
        ("prefix.example", "local-data", "prefix.example"),
        ("x.wild.example", "nxdomain", "*.wild.example"),
        ("x.y.wild.example", "nxdomain", "*.wild.example"),
        ("NX.Example.", "nxdomain", "nx.example"),  # tolerated: case and final dot
    ],
)
def test_actions(tmp_path: Path, qname: str, action: str, owner: str) -> None:
    table = PolicyTable([zone(tmp_path, ACTIONS_BODY)])
    hit = table.lookup(qname, None)
    assert hit is not None
    assert (hit.action, hit.owner, hit.trigger, hit.zone) == (action, owner, "qname", "z")


@pytest.mark.parametrize("qname", ["wild.example", "example", "other.test", "", "a.example.org"])
def test_no_match(tmp_path: Path, qname: str) -> None:
    assert PolicyTable([zone(tmp_path, ACTIONS_BODY)]).lookup(qname, ip("192.0.2.1")) is None


@pytest.mark.parametrize(
    ("qname", "rdtype", "expected"),
    [
        ("a.example", None, ["a.example. 300 IN A 192.0.2.1\na.example. 300 IN A 192.0.2.2"]),
        ("mx.example", dns.rdatatype.MX, ["mx.example. 300 IN MX 10 sink.guard.invalid."]),
        ("mx.example", dns.rdatatype.AAAA, []),  # NODATA
        ("garden.example", dns.rdatatype.A, ["garden.example. 300 IN CNAME walled.garden.invalid."]),
        ("prefix.example", None, ["prefix.example. 300 IN CNAME prefix.example.sink.guard.invalid."]),
    ],
)
def test_records_for(tmp_path: Path, qname: str, rdtype: int | None, expected: list[str]) -> None:
    hit = PolicyTable([zone(tmp_path, ACTIONS_BODY)]).lookup(qname)
    assert hit is not None
    assert sorted(r.to_text() for r in hit.records_for(qname, rdtype)) == sorted(expected)


def test_records_for_wildcard_uses_query_name_and_prefix(tmp_path: Path) -> None:
    table = PolicyTable([zone(tmp_path, "*.look.example CNAME *.sink.invalid.\n*.a.example A 192.0.2.9\n")])
    hit = table.lookup("www.look.example")
    assert hit is not None
    assert [r.to_text() for r in hit.records_for("www.look.example")] == [
        "www.look.example. 300 IN CNAME www.look.example.sink.invalid."
    ]
    hit = table.lookup("mail.a.example")
    assert hit is not None
    assert [r.to_text() for r in hit.records_for("mail.a.example")] == ["mail.a.example. 300 IN A 192.0.2.9"]
    assert len(hit.records[0]) == 1  # the rule's own RRset is untouched


def test_records_for_prefix_too_long_falls_back_to_sink(tmp_path: Path) -> None:
    table = PolicyTable([zone(tmp_path, "*.look.example CNAME *.sink.invalid.\n")])
    qname = ".".join(["a" * 63] * 3 + ["b" * 40]) + ".look.example"  # 245 octets
    hit = table.lookup(qname)
    assert hit is not None
    assert hit.records_for(qname)[0][0].target.to_text() == "sink.invalid."


CLIENT_BODY = """\
32.25.2.0.192.rpz-client-ip       CNAME rpz-drop.
24.0.2.0.192.rpz-client-ip        CNAME .
8.0.0.0.10.rpz-client-ip          CNAME rpz-passthru.
128.1.zz.db8.2001.rpz-client-ip   CNAME rpz-tcp-only.
48.zz.db8.2001.rpz-client-ip      CNAME *.
64.0.0.0.0.1.0.db8.2001.rpz-client-ip CNAME .
"""


@pytest.mark.parametrize(
    ("client", "owner", "action"),
    [
        ("192.0.2.25", "32.25.2.0.192.rpz-client-ip", "drop"),  # longest prefix wins
        ("192.0.2.26", "24.0.2.0.192.rpz-client-ip", "nxdomain"),
        ("10.200.1.1", "8.0.0.0.10.rpz-client-ip", "passthru"),
        ("::ffff:192.0.2.25", "32.25.2.0.192.rpz-client-ip", "drop"),  # v4-mapped on a dual-stack socket
        ("2001:db8::1", "128.1.zz.db8.2001.rpz-client-ip", "tcp-only"),
        ("2001:db8::2", "48.zz.db8.2001.rpz-client-ip", "nodata"),
        ("2001:db8:0:1::5", "64.0.0.0.0.1.0.db8.2001.rpz-client-ip", "nxdomain"),
        ("2001:db8:0:ffff::1", "48.zz.db8.2001.rpz-client-ip", "nodata"),
    ],
)
def test_client_ip(tmp_path: Path, client: str, owner: str, action: str) -> None:
    hit = PolicyTable([zone(tmp_path, CLIENT_BODY)]).lookup("anything.example", ip(client))
    assert hit is not None
    assert (hit.owner, hit.action, hit.trigger) == (owner, action, "client-ip")


@pytest.mark.parametrize("client", ["192.0.3.1", "11.0.0.1", "2001:db9::1", None])
def test_client_ip_no_match(tmp_path: Path, client: str | None) -> None:
    table = PolicyTable([zone(tmp_path, CLIENT_BODY)])
    assert table.lookup("anything.example", ip(client) if client else None) is None


# Precedence: (zones in order, qname, client) → (zone, owner, action)
PRECEDENCE = [
    pytest.param(
        ["army.ml CNAME rpz-passthru.\n", "army.ml CNAME .\n"],
        "army.ml",
        None,
        ("z0", "army.ml", "passthru"),
        id="passthru-in-first-zone-beats-nxdomain-in-second",
    ),
    pytest.param(
        ["other.example CNAME .\n", "army.ml CNAME .\n"],
        "army.ml",
        None,
        ("z1", "army.ml", "nxdomain"),
        id="second-zone-when-first-does-not-match",
    ),
    pytest.param(
        ["*.army.ml CNAME rpz-passthru.\n", "www.army.ml CNAME .\n"],
        "www.army.ml",
        None,
        ("z0", "*.army.ml", "passthru"),
        id="zone-order-beats-exact-over-wildcard",
    ),
    pytest.param(
        ["*.army.ml CNAME .\nwww.army.ml CNAME rpz-passthru.\n"],
        "www.army.ml",
        None,
        ("z0", "www.army.ml", "passthru"),
        id="exact-beats-wildcard",
    ),
    pytest.param(
        ["*.ml CNAME .\n*.army.ml CNAME rpz-drop.\n*.x.army.ml CNAME *.\n"],
        "a.x.army.ml",
        None,
        ("z0", "*.x.army.ml", "nodata"),
        id="longer-wildcard-wins",
    ),
    pytest.param(
        ["*.ml CNAME .\n*.army.ml CNAME rpz-drop.\n"],
        "mail.army.ml",
        None,
        ("z0", "*.army.ml", "drop"),
        id="longer-wildcard-wins-2",
    ),
    pytest.param(
        ["*.ml CNAME .\n*.army.ml CNAME rpz-drop.\n"],
        "navy.ml",
        None,
        ("z0", "*.ml", "nxdomain"),
        id="shorter-wildcard-when-longer-misses",
    ),
    pytest.param(
        ["army.ml CNAME .\n32.25.2.0.192.rpz-client-ip CNAME rpz-passthru.\n"],
        "army.ml",
        "192.0.2.25",
        ("z0", "32.25.2.0.192.rpz-client-ip", "passthru"),
        id="client-ip-beats-qname",
    ),
    pytest.param(
        ["army.ml CNAME .\n32.25.2.0.192.rpz-client-ip CNAME rpz-passthru.\n"],
        "army.ml",
        "192.0.2.26",
        ("z0", "army.ml", "nxdomain"),
        id="qname-for-other-clients",
    ),
    pytest.param(
        ["army.ml CNAME .\n", "32.25.2.0.192.rpz-client-ip CNAME rpz-passthru.\n"],
        "army.ml",
        "192.0.2.25",
        ("z0", "army.ml", "nxdomain"),
        id="zone-order-beats-trigger-type",
    ),
    pytest.param(
        ["* CNAME rpz-drop.\narmy.ml CNAME .\n"],
        "anything.example",
        None,
        ("z0", "*", "drop"),
        id="apex-wildcard-matches-everything",
    ),
]


@pytest.mark.parametrize(("bodies", "qname", "client", "expected"), PRECEDENCE)
def test_precedence(
    tmp_path: Path, bodies: list[str], qname: str, client: str | None, expected: tuple[str, str, str]
) -> None:
    zones = [zone(tmp_path, body, name=f"z{i}.rpz") for i, body in enumerate(bodies)]
    hit = PolicyTable(zones).lookup(qname, ip(client) if client else None)
    assert hit is not None
    assert (hit.zone, hit.owner, hit.action) == expected


def test_rule_count_and_warnings(tmp_path: Path) -> None:
    body = (
        ACTIONS_BODY
        + CLIENT_BODY
        + (
            "32.1.2.0.192.rpz-ip CNAME .\n"
            "ns.example.rpz-nsdname CNAME .\n"
            "32.1.2.0.192.rpz-nsip CNAME .\n"
            "x.example CNAME rpz-unknown-action.\n"
        )
    )
    z = zone(tmp_path, body)
    table = PolicyTable([z])
    assert table.rule_count == {"z": 12 + 6}  # one rule per owner
    assert len(z.warnings) == 4
    assert any("rpz-nsdname" in w and f"{tmp_path / 'z.rpz'}:" in w for w in z.warnings)
    assert table.lookup("x.example") is None


@pytest.mark.parametrize(
    ("head", "filename", "origin", "name"),
    [
        (HEAD, "10-a.rpz", "rpz.test.", "10-a"),
        ("$TTL 60\n@ SOA ns.x. h.x. 1 2 3 4 5\n", "20-feed.rpz", "20-feed.", "20-feed"),
    ],
)
def test_origin_and_name(tmp_path: Path, head: str, filename: str, origin: str, name: str) -> None:
    z = load_rpz(write(tmp_path, filename, "army.ml CNAME .\n", head=head))
    assert (z.origin.to_text(), z.name, z.serial) == (origin, name, 1 if head is HEAD else 1)
    assert PolicyTable([z]).lookup("army.ml") is not None
    assert load_rpz(tmp_path / filename, name="custom").name == "custom"


def test_soa_and_ns_at_apex_are_not_rules(tmp_path: Path) -> None:
    z = zone(tmp_path, "")
    assert (z.rule_count, z.warnings) == (0, ())
    assert PolicyTable([z]).lookup("rpz.test") is None


# Errors: body → (line, words in the problem)
ERRORS = [
    pytest.param("ok.example CNAME .\nbad.example FOO bar\n", 6, "unknown rdatatype", id="syntax"),
    pytest.param("a.example A 192.0.2.1 (\n", 6, "parentheses", id="unbalanced-parens"),
    pytest.param("$INCLUDE /etc/passwd\n", 5, "$INCLUDE", id="include-refused"),
    pytest.param("ok.example CNAME .\n33.1.2.0.192.rpz-client-ip CNAME .\n", 6, "33", id="v4-prefix-too-long"),
    pytest.param("24.1.2.0.192.rpz-client-ip CNAME .\n", 5, "host bits", id="v4-host-bits"),
    pytest.param("32.1.2.0.300.rpz-client-ip CNAME .\n", 5, "300", id="v4-octet"),
    pytest.param("32.x.2.0.192.rpz-client-ip CNAME .\n", 5, "rpz-client-ip", id="v4-garbage"),
    pytest.param("x.1.2.0.192.rpz-client-ip CNAME .\n", 5, "prefix length", id="prefix-not-number"),
    pytest.param("128.1.zz.db8.zz.rpz-client-ip CNAME .\n", 5, "zz", id="v6-two-zz"),
    pytest.param("128.1.2.3.db8.2001.rpz-client-ip CNAME .\n", 5, "8 groups", id="v6-short"),
    pytest.param("128.1.zz.db8g.2001.rpz-client-ip CNAME .\n", 5, "db8g", id="v6-bad-group"),
    pytest.param("129.1.zz.db8.2001.rpz-client-ip CNAME .\n", 5, "129", id="v6-prefix"),
    pytest.param("*.32.1.2.0.192.rpz-client-ip CNAME .\n", 5, "wildcard", id="client-ip-wildcard"),
    pytest.param("ok.example CNAME .\narmy.ml. CNAME .\n", 6, "outside the zone", id="absolute-owner"),
    pytest.param("ok.example CNAME rpz-passthru\n", 5, "final dot", id="missing-dot-passthru"),
    pytest.param("ok.example CNAME *\n", 5, "final dot", id="missing-dot-nodata"),
    pytest.param("x.example A 192.0.2.1\n\n; c\nx.example CNAME .\n", 8, "CNAME and other data", id="cname-and-other"),
]


@pytest.mark.parametrize(("body", "line", "problem"), ERRORS)
def test_errors_name_file_and_line(tmp_path: Path, body: str, line: int, problem: str) -> None:
    path = write(tmp_path, "bad.rpz", body)
    with pytest.raises(ZoneFileError) as info:
        load_rpz(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert problem in message
    assert "\n" not in message
    assert (info.value.path, info.value.line) == (str(path), line)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("$TTL 60\nx A 192.0.2.1\n", "no SOA"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_file_level_errors(tmp_path: Path, text: str | bytes, problem: str) -> None:
    path = tmp_path / "bad.rpz"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ZoneFileError, match=problem):
        load_rpz(path)
    with pytest.raises(ZoneFileError, match="cannot read"):
        load_rpz(tmp_path / "missing.rpz")


def test_load_zone_dir_sorted_order_is_precedence(tmp_path: Path) -> None:
    write(tmp_path, "50-feed.rpz", "army.ml CNAME .\n")
    write(tmp_path, "10-overrides.rpz", "army.ml CNAME rpz-passthru.\n")
    write(tmp_path, "ignored.txt", "army.ml CNAME rpz-drop.\n")
    zones = load_zone_dir(tmp_path)
    assert [z.name for z in zones] == ["10-overrides", "50-feed"]
    hit = PolicyTable(zones).lookup("army.ml")
    assert hit is not None and (hit.zone, hit.action) == ("10-overrides", "passthru")
    with pytest.raises(ZoneFileError, match="does not exist"):
        load_zone_dir(tmp_path / "nope")


def test_example_zones_load() -> None:
    """zones/ ships with resolverguard and loads at start-up: it must stay valid."""
    zones = load_zone_dir(REPO / "zones")
    assert zones and all(not z.warnings for z in zones)
    table = PolicyTable(zones)
    for qname, client, action in [
        ("ok.partner.example", None, "passthru"),
        ("www.phish.example", None, "nxdomain"),
        ("lookalike-mail.example", None, "local-data"),
        ("army.ml", ip("192.0.2.25"), "passthru"),
    ]:
        hit = table.lookup(qname, client)
        assert hit is not None and hit.action == action


def test_lookup_is_not_a_scan(tmp_path: Path) -> None:
    """Lookups use dicts: emptying the rule list must not change any answer."""
    z = zone(tmp_path, ACTIONS_BODY + CLIENT_BODY)
    table = PolicyTable([z])
    before = [table.lookup(q, ip("192.0.2.25")) for q in ("nx.example", "x.wild.example")]
    object.__setattr__(z, "rules", ())
    assert [table.lookup(q, ip("192.0.2.25")) for q in ("nx.example", "x.wild.example")] == before


@given(st.ip_addresses(v=4) | st.ip_addresses(v=6), st.integers(min_value=1, max_value=128))
def test_client_ip_encoding_round_trip(address: ipaddress.IPv4Address | ipaddress.IPv6Address, plen: int) -> None:
    plen = min(plen, address.max_prefixlen)
    network = ipaddress.ip_network(f"{address}/{plen}", strict=False)
    encoded = encode_client_ip(network)
    assert parse_client_ip(dns.name.from_text(encoded, origin=None)) == network
