"""Zone overrides, typo actions, hot reload, lint and export against a running guard (issue 4)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import unbound_helper
from fakes import GUARD_CMD
from polling import wait_until

SOA = "@ SOA ns.invalid. hostmaster.invalid. 1 3600 600 86400 60\n  NS ns.invalid.\n"


def zone(path: Path, body: str, origin: str = "rpz.test.") -> Path:
    path.write_text(f"$ORIGIN {origin}\n$TTL 300\n{SOA}{body}")
    return path


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "guard.toml"
    path.write_text(text)
    return str(path)


def ede(reply: dns.message.Message) -> list[tuple[int, str]]:
    return [(o.code, o.text or "") for o in reply.options if o.otype == dns.edns.EDE]


def addresses(reply: dns.message.Message, section: str = "answer") -> list[str]:
    return sorted(rd.to_text() for rrset in getattr(reply, section) for rd in rrset)


def edns_query(guard, name: str, qtype: str = "A", **kw) -> dns.message.Message:
    return guard.query(name, qtype, use_edns=0, **kw)


# ---------------------------------------------------------------- typo actions, per domain, by qtype


@pytest.fixture
def action_guard(tmp_path, upstream, start_guard):
    for name in ("army.ml", "gmial.com", "paypa1.com", "mail.com"):
        for qtype, rr in (("A", "A 203.0.113.7"), ("TXT", 'TXT "upstream"'), ("MX", "MX 10 mx.upstream.example.")):
            upstream.on(name, qtype, f"{name}. 300 {rr}")
    cfg = config(
        tmp_path,
        f"""
upstreams = ["{upstream.address}"]
protect = ["army.mil", "gmail.com", "paypal.com"]
[typo]
action = "sink"
domains = {{ "gmail.com" = "refused", "paypal.com" = "log-only" }}
[sink]
ipv4 = "10.9.9.9"
ipv6 = "fd00::9"
mail_host = "sink.example."
ttl = 30
""",
    )
    return start_guard("--config", cfg)


def test_sink_answers_by_qtype_with_short_ttl_and_ede(action_guard, upstream):
    a = edns_query(action_guard, "army.ml", "A")
    assert a.rcode() == dns.rcode.NOERROR and addresses(a) == ["10.9.9.9"]
    assert a.answer[0].ttl == 30
    aaaa = edns_query(action_guard, "mail.army.ml", "AAAA")
    assert addresses(aaaa) == ["fd00::9"]
    mx = edns_query(action_guard, "army.ml", "MX")
    assert addresses(mx) == ["10 sink.example."]
    assert "10.9.9.9" in addresses(mx, "additional")  # the sink host's address comes along
    for reply in (a, aaaa, mx):
        codes = ede(reply)
        assert codes and codes[0][0] in (15, 17) and "army.mil" in codes[0][1], codes
    assert upstream.count("army.ml") == 0 and upstream.count("mail.army.ml") == 0


def test_other_qtypes_are_forwarded_by_default(action_guard, upstream):
    txt = action_guard.query("army.ml", "TXT")
    assert txt.rcode() == dns.rcode.NOERROR and addresses(txt) == ['"upstream"']
    assert upstream.count("army.ml") == 1


def test_per_domain_actions_refused_and_log_only(action_guard, upstream, tmp_path):
    refused = edns_query(action_guard, "gmial.com", "MX")
    assert refused.rcode() == dns.rcode.REFUSED
    assert "gmail.com" in ede(refused)[0][1]
    logged = action_guard.query("paypa1.com", "A")  # log-only: resolved, but recorded as a would-block
    assert addresses(logged) == ["203.0.113.7"]
    assert upstream.count("gmial.com") == 0 and upstream.count("paypa1.com") == 1

    def by_name() -> dict:  # the events file is written by a thread: both lines arrive soon, not at once
        lines = (tmp_path / "events.jsonl").read_text().splitlines()
        events = {e["qname"]: e for e in map(json.loads, lines)}
        return events if {"paypa1.com", "gmial.com"} <= set(events) else {}

    by_name = wait_until(by_name, what="both block events written")
    assert by_name["paypa1.com"]["action"] == "log-only" and by_name["paypa1.com"]["protected"] == "paypal.com"
    assert by_name["gmial.com"]["action"] == "refused"


def test_qtypes_setting_limits_which_lookups_are_blocked(tmp_path, upstream, start_guard):
    upstream.on("army.ml", "A", "army.ml. 300 A 203.0.113.7")
    cfg = config(tmp_path, f'upstreams = ["{upstream.address}"]\nprotect = ["army.mil"]\n[typo]\nqtypes = ["MX"]\n')
    guard = start_guard("--config", cfg)
    assert guard.query("army.ml", "MX").rcode() == dns.rcode.NXDOMAIN
    assert addresses(guard.query("army.ml", "A")) == ["203.0.113.7"]


# ---------------------------------------------------------------- RPZ overrides and precedence


@pytest.fixture
def rpz_guard(tmp_path, upstream, start_guard):
    zones = tmp_path / "zones"
    zones.mkdir()
    zone(
        zones / "10-first.rpz",
        """
nx.example CNAME .
*.nx.example CNAME .
nodata.example CNAME *.
ok.gmial.com CNAME rpz-passthru.
drop.example CNAME rpz-drop.
tconly.example CNAME rpz-tcp-only.
local.example A 192.0.2.1
local.example A 192.0.2.2
local.example MX 10 mx.local.example.
local.example TXT "hello"
*.wild.example CNAME .
exact.wild.example A 192.0.2.9
32.5.0.0.127.rpz-client-ip CNAME .
""",
    )
    zone(
        zones / "20-second.rpz",
        """
nx.example A 192.0.2.66
client.example A 192.0.2.77
""",
    )
    for name in ("ok.gmial.com", "tconly.example", "client.example", "other.example"):
        upstream.on(name, "A", f"{name}. 300 A 203.0.113.1")
    (zones / "main.protect").write_text("# protected domains\ngmail.com\n")
    return start_guard("--upstream", upstream.address, zones=zones)


def test_rpz_actions(rpz_guard, upstream):
    g = rpz_guard
    assert g.query("nx.example").rcode() == dns.rcode.NXDOMAIN
    assert g.query("deep.below.nx.example").rcode() == dns.rcode.NXDOMAIN
    nodata = g.query("nodata.example")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert addresses(g.query("local.example", "A")) == ["192.0.2.1", "192.0.2.2"]
    assert addresses(g.query("local.example", "MX")) == ["10 mx.local.example."]
    assert addresses(g.query("local.example", "TXT")) == ['"hello"']
    assert not g.query("local.example", "AAAA").answer  # local data without this type: NODATA
    with pytest.raises(dns.exception.Timeout):
        g.query("drop.example", timeout=0.5)
    tc = dns.query.udp(
        dns.message.make_query("tconly.example", "A"), g.host, port=g.port, timeout=2, ignore_trailing=True
    )
    assert tc.flags & dns.flags.TC and not tc.answer
    assert addresses(g.query("tconly.example", tcp=True)) == ["203.0.113.1"]
    assert upstream.count("nx.example") == upstream.count("drop.example") == 0


def test_override_passthru_beats_typo_detector(rpz_guard, upstream):
    assert rpz_guard.query("gmial.com").rcode() == dns.rcode.NXDOMAIN  # the detector
    assert addresses(rpz_guard.query("ok.gmial.com")) == ["203.0.113.1"]  # the operator's exception


def test_precedence_zone_order_then_specificity_then_client_ip(rpz_guard):
    g = rpz_guard
    # zone order: 10-first says NXDOMAIN, 20-second has local data for the same name
    assert g.query("nx.example").rcode() == dns.rcode.NXDOMAIN
    # more specific name within a zone: the exact rule beats *.wild.example
    assert addresses(g.query("exact.wild.example")) == ["192.0.2.9"]
    assert g.query("other.wild.example").rcode() == dns.rcode.NXDOMAIN
    # a later zone still applies when earlier zones do not match
    assert addresses(g.query("client.example")) == ["192.0.2.77"]
    # CLIENT-IP in the first zone beats the QNAME rule of the second for client 127.0.0.5 only
    q = dns.message.make_query("client.example", "A")
    from_5 = dns.query.udp(q, g.host, port=g.port, timeout=2, source="127.0.0.5")
    assert from_5.rcode() == dns.rcode.NXDOMAIN
    assert addresses(g.query("client.example")) == ["192.0.2.77"]  # other clients are unaffected


# ---------------------------------------------------------------- hot reload


GOOD = ("flip.example CNAME .\n", "flip.example A 192.0.2.1\n")
BAD = "flip.example A 192.0.2.300\n"  # line 5 of the file: a bad address
FLIP = {GOOD[0]: "NXDOMAIN", GOOD[1]: "192.0.2.1"}  # what the load threads see under each good file


def test_reload_under_load_old_or_new_policy_never_half(tmp_path, upstream, start_guard):
    upstream.on("flip.example", "A", "flip.example. 300 A 203.0.113.99")  # must never be seen
    zones = tmp_path / "zones"
    zones.mkdir()
    path = zone(zones / "10-flip.rpz", GOOD[0])
    guard = start_guard("--upstream", upstream.address, "--metrics", "127.0.0.1:0", zones=zones)
    seen: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                reply = guard.query("flip.example", timeout=3)
            except BaseException as exc:  # noqa: BLE001 - any failure is a test failure, reported below
                errors.append(exc)
                return
            addr = addresses(reply)
            seen.append(dns.rcode.to_text(reply.rcode()) if not addr else addr[0])

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    rounds = 12
    for i in range(rounds):
        text = BAD if i % 3 == 2 else GOOD[i % 2]
        mark, failures = len(seen), guard.output().count("keeping the last good policy")
        zone(path, text)
        guard.proc.send_signal(signal.SIGHUP)
        if text == BAD:  # the bad file is reported with file:line and the last good policy stays
            wait_until(lambda n=failures: guard.output().count("keeping the last good policy") > n, "the failed reload")
            expected = FLIP[GOOD[(i - 1) % 2]]
            reply = guard.query("flip.example")
            assert dns.rcode.to_text(reply.rcode()) == expected or addresses(reply) == [expected]
        else:  # the load threads see the new policy
            wait_until(
                lambda want=FLIP[text], mark=mark: want in seen[mark:] or errors, f"{FLIP[text]} after reload {i}"
            )
    wait_until(lambda: len(seen) > 50 or errors, "more than 50 answers")
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors, errors
    assert len(seen) > 50
    assert set(seen) <= {"NXDOMAIN", "192.0.2.1"}, set(seen)
    assert {"NXDOMAIN", "192.0.2.1"} <= set(seen)
    assert upstream.count("flip.example") == 0
    assert "10-flip.rpz:5" in guard.output() and "keeping the last good policy" in guard.output()


def test_file_change_is_picked_up_without_signal(tmp_path, upstream, start_guard):
    zones = tmp_path / "zones"
    zones.mkdir()
    upstream.on("watched.example", "A", "watched.example. 300 A 203.0.113.5")
    guard = start_guard("--upstream", upstream.address, zones=zones)
    assert addresses(guard.query("watched.example")) == ["203.0.113.5"]
    zone(zones / "10-new.rpz", "watched.example CNAME .\n")
    wait_until(lambda: guard.query("watched.example").rcode() == dns.rcode.NXDOMAIN, "the new zone file")


def test_bad_zone_at_startup_names_file_and_line_exit_2(tmp_path):
    zones = tmp_path / "zones"
    zones.mkdir()
    zone(zones / "10-bad.rpz", "ok.example CNAME .\n" + BAD)
    out = subprocess.run(
        [*GUARD_CMD, "serve", "--zones", str(zones), "--upstream", "127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "10-bad.rpz:6" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


# ---------------------------------------------------------------- lint and export


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*GUARD_CMD, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_lint_accepts_shipped_zones_and_rejects_errors(tmp_path):
    shipped = Path(__file__).resolve().parents[2] / "zones"
    ok = run_cli("lint", "--zones", str(shipped), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "ok:" in ok.stdout
    zones = tmp_path / "zones"
    zones.mkdir()
    zone(zones / "10-bad.rpz", BAD)
    bad = run_cli("lint", "--zones", str(zones), cwd=tmp_path)
    assert bad.returncode != 0 and "10-bad.rpz:5" in bad.stderr


def test_export_serial_grows_only_on_change(tmp_path):
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "a.protect").write_text("army.mil\n")
    out = tmp_path / "export.rpz"

    def serial() -> int:
        result = run_cli("export-rpz", "--zones", str(zones), "-o", str(out), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        text = out.read_text()
        assert "army.ml 300 CNAME ." in text and "\narmy.mil " not in text
        return int(next(line for line in text.splitlines() if " SOA " in line).split()[4])

    first = serial()
    assert serial() == first  # unchanged content: same serial, secondaries transfer nothing
    zone(zones / "10-o.rpz", "extra.example CNAME .\n")
    second = serial()
    assert second > first


def test_running_guard_serves_export_by_axfr_to_real_unbound(tmp_path, upstream, start_guard):
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "a.protect").write_text("army.mil\ngmail.com\n")
    (zones / "ok.allow").write_text("mail.com\n")
    guard = start_guard("--upstream", upstream.address, zones=zones)
    soa = guard.query("rpz.resolverguard.", "SOA")
    assert soa.rcode() == dns.rcode.SERVFAIL or soa.answer  # first ask starts the rendering
    primary = f"127.0.0.1@{guard.port}"
    local = ("army.mil. 300 A 192.0.2.10", "mail.com. 300 A 192.0.2.12")
    udir = tmp_path / "unbound"
    udir.mkdir()
    with unbound_helper.running_unbound(udir, rpz_primary=primary, local_data=local) as unbound:
        deadline = time.monotonic() + 20
        attempt = 0
        while True:
            attempt += 1
            try:
                if (
                    unbound_helper.query(unbound.port, f"p{attempt}.gmial.com.", timeout=0.3).rcode()
                    == dns.rcode.NXDOMAIN
                ):
                    break
            except dns.exception.Timeout:
                pass
            assert time.monotonic() < deadline, (udir / "unbound.log").read_text()
        assert unbound_helper.query(unbound.port, "army.ml.").rcode() == dns.rcode.NXDOMAIN
        assert unbound_helper.query(unbound.port, "mail.army.ml.").rcode() == dns.rcode.NXDOMAIN
        assert addresses(unbound_helper.query(unbound.port, "army.mil.")) == ["192.0.2.10"]
        assert addresses(unbound_helper.query(unbound.port, "mail.com.")) == ["192.0.2.12"]


def test_transfer_refused_to_other_clients_and_over_udp(tmp_path, upstream, start_guard):
    cfg = config(
        tmp_path, f'upstreams = ["{upstream.address}"]\nprotect = ["army.mil"]\n[export]\nclients = ["127.0.0.9/32"]\n'
    )
    guard = start_guard("--config", cfg)
    q = dns.message.make_query("rpz.resolverguard.", "AXFR")
    assert dns.query.tcp(q, guard.host, port=guard.port, timeout=3).rcode() == dns.rcode.REFUSED
    assert dns.query.udp(q, guard.host, port=guard.port, timeout=3).rcode() == dns.rcode.REFUSED

    def transfer() -> dns.message.Message | None:
        reply = dns.query.tcp(q, guard.host, port=guard.port, timeout=3, source="127.0.0.9")
        return reply if reply.rcode() == dns.rcode.NOERROR else None

    reply = wait_until(transfer, "the rendered export zone")  # the allowed client gets it once it is rendered
    names = {rrset.name.to_text() for rrset in reply.answer}
    assert "army.ml.rpz.resolverguard." in names and reply.answer[0].rdtype == dns.rdatatype.SOA
