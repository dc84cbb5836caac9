"""ZoneExport: TSIG (REFUSED unsigned, NOTAUTH bad), IXFR from the journal, AXFR fallback, refusals logged once."""

from __future__ import annotations

import base64
import logging
from dataclasses import replace
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import dns.tsigkeyring
import pytest
from prometheus_client import CollectorRegistry

from resolverguard import wire
from resolverguard.config import Config, parse_endpoint
from resolverguard.errors import ConfigError
from resolverguard.export import ExportMetrics, Journal, ZoneExport, build_rpz, load_tsig, setup_export
from resolverguard.metrics import Metrics

ORIGIN = "rpz.resolverguard."
SECRET = base64.b64encode(b"k" * 32).decode()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "key"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


def test_secret_file_readable_by_others_is_refused(secret_file: Path) -> None:
    secret_file.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by group or others"):
        load_tsig("k.", "hmac-sha256", str(secret_file))


def test_bad_algorithm_is_a_config_error(secret_file: Path) -> None:
    with pytest.raises(ConfigError, match="bad TSIG key"):
        load_tsig("k.", "hmac-nonsense", str(secret_file))


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def export(tmp_path: Path, secret_file: Path) -> ZoneExport:
    journal = Journal(tmp_path / "state")
    for neighbours in (["army.ml"], ["army.ml", "arny.mil"]):
        e = build_rpz(None, {"army.mil": neighbours}, serial=0)
        journal.publish(e.digest, list(e.records))
    return ZoneExport(
        ORIGIN,
        ["127.0.0.0/8"],
        lambda: None,
        journal=journal,
        tsig=load_tsig("k.", "hmac-sha256", str(secret_file)),
        metrics=ExportMetrics(CollectorRegistry(), []),
        clock=Clock(),
    )


def ask(export: ZoneExport, message: dns.message.Message, client: str = "127.0.0.1") -> list[dns.message.Message]:
    replies = export.answer(wire.parse_query(message.to_wire(), client, True))
    keyring = message.keyring if message.had_tsig or message.keyring else None
    out, ctx = [], None
    for data in replies:
        reply = dns.message.from_wire(
            data,
            keyring=keyring,
            request_mac=message.mac if keyring else b"",
            xfr=True,
            origin=None,
            tsig_ctx=ctx,
            multi=True,
        )
        ctx = reply.tsig_ctx
        out.append(reply)
    return out


def signed(rdtype: str, secret: str = SECRET, serial: int | None = None) -> dns.message.Message:
    q = dns.message.make_query(ORIGIN, rdtype)
    if serial is not None:
        q = dns.message.make_query(ORIGIN, rdtype)
        q.authority.append(dns.rrset.from_text(ORIGIN, 0, "IN", "SOA", f". . {serial} 0 0 0 0"))
    q.use_tsig(dns.tsigkeyring.from_text({"k.": secret}), "k.")
    return q


def test_unsigned_refused_bad_signature_notauth_counted_logged_once(export: ZoneExport, caplog) -> None:
    caplog.set_level(logging.WARNING, "resolverguard.transfer")
    for _ in range(3):
        [reply] = ask(export, dns.message.make_query(ORIGIN, "AXFR"))
        assert reply.rcode() == dns.rcode.REFUSED
    wrong = signed("AXFR", base64.b64encode(b"x" * 32).decode())
    data = export.answer(wire.parse_query(wrong.to_wire(), "127.0.0.2", True))
    assert dns.message.from_wire(data[0]).rcode() == dns.rcode.NOTAUTH
    assert caplog.text.count("transfer refused client=127.0.0.1 reason=no_key") == 1
    assert "reason=bad_signature" in caplog.text and SECRET not in caplog.text
    assert export.metrics.refused.labels("no_key").value == 3
    export.clock.now += 61
    ask(export, dns.message.make_query(ORIGIN, "AXFR"))
    assert caplog.text.count("transfer refused client=127.0.0.1 reason=no_key") == 2


def test_signed_axfr_and_ixfr(export: ZoneExport) -> None:
    serials = [v["serial"] for v in export.journal.state()["versions"]]
    axfr = [rr for m in ask(export, signed("AXFR")) for rr in m.answer]
    assert axfr[0].rdtype == axfr[-1].rdtype == dns.rdatatype.SOA and axfr[0][0].serial == serials[-1]
    ixfr = [rr for m in ask(export, signed("IXFR", serial=serials[0])) for rr in m.answer]
    kinds = [(rr.rdtype, rr.name.to_text()) for rr in ixfr]
    soa = dns.rdatatype.SOA
    assert [rr[0].serial for rr in ixfr if rr.rdtype == soa] == [serials[1], serials[0], serials[1], serials[1]]
    assert {name for t, name in kinds if t != soa} == {f"arny.mil.{ORIGIN}", f"*.arny.mil.{ORIGIN}"}
    uptodate = [rr for m in ask(export, signed("IXFR", serial=serials[1])) for rr in m.answer]
    assert len(uptodate) == 1 and uptodate[0][0].serial == serials[1]
    old = [rr for m in ask(export, signed("IXFR", serial=1)) for rr in m.answer]  # not in the journal: AXFR form
    assert len(old) == len(axfr)


def test_signed_soa_over_udp(export: ZoneExport) -> None:
    q = signed("SOA")
    data = export.answer(wire.parse_query(q.to_wire(), "127.0.0.1", False))
    reply = dns.message.from_wire(data[0], keyring=q.keyring, request_mac=q.mac)
    assert reply.had_tsig and reply.answer[0][0].serial == export.journal.serial


def test_acl_still_applies_with_a_key(export: ZoneExport) -> None:
    data = export.answer(wire.parse_query(signed("AXFR").to_wire(), "192.0.2.1", True))
    assert dns.message.from_wire(data[0]).rcode() == dns.rcode.REFUSED


def test_signed_axfr_over_many_messages_verifies(tmp_path: Path, secret_file: Path) -> None:
    journal = Journal(tmp_path / "big")
    e = build_rpz(None, {"x.com": [f"n{i}-{'a' * 55}.com" for i in range(1500)]}, serial=0)
    journal.publish(e.digest, list(e.records))
    export = ZoneExport(
        ORIGIN, ["127.0.0.0/8"], lambda: None, journal=journal, tsig=load_tsig("k.", "hmac-sha256", str(secret_file))
    )
    replies = ask(export, signed("AXFR"))
    assert len(replies) > 1 and all(r.had_tsig for r in replies)
    assert sum(len(rr) for r in replies for rr in r.answer) == 2 * 1500 + 3


def test_export_state_lives_under_the_state_dir_and_survives_close(tmp_path: Path) -> None:
    cfg = replace(Config(), state_dir=str(tmp_path / "state"))
    export = setup_export(cfg, lambda: None, CollectorRegistry())
    assert export.journal.dir == tmp_path / "state" / "export" and export.journal.dir.is_dir()
    export.close()
    assert export.journal.dir.is_dir()  # the operator's state, not a temporary directory
    explicit = replace(cfg, export_state_dir=str(tmp_path / "elsewhere"))
    assert setup_export(explicit, lambda: None, CollectorRegistry()).journal.dir == tmp_path / "elsewhere"


def test_ixfr_from_a_newer_serial_gets_the_single_current_soa(export: ZoneExport) -> None:
    """RFC 1995 §2: a client already newer than the server (in serial arithmetic) gets one SOA, not the zone."""
    current = export.journal.serial
    for ahead in (current + 1, current + 2**31 - 1, (current + 5) % 2**32):
        replies = ask(export, signed("IXFR", serial=ahead))
        rrs = [rr for m in replies for rr in m.answer]
        assert len(replies) == 1 and len(rrs) == 1 and rrs[0].rdtype == dns.rdatatype.SOA, ahead
        assert rrs[0][0].serial == current
    behind = (current + 2**31 + 1) % 2**32  # "newer" wraps: this one is older and not in the journal
    assert len([rr for m in ask(export, signed("IXFR", serial=behind)) for rr in m.answer]) > 1


def test_export_metrics_count_on_the_guards_tally(tmp_path: Path) -> None:
    metrics = Metrics(CollectorRegistry())
    cfg = replace(Config(), state_dir=str(tmp_path / "state"), export_notify=(parse_endpoint("127.0.0.1:5300"),))
    export = setup_export(cfg, lambda: None, metrics)
    sample = metrics.registry.get_sample_value
    assert sample("resolverguard_export_refused_total", {"reason": "acl"}) == 0  # declared at 0
    assert sample("resolverguard_export_secondary_serial", {"secondary": "127.0.0.1:5300"}) == 0
    data = dns.message.make_query(ORIGIN, "AXFR").to_wire()
    assert not export.is_transfer(wire.parse_query(data, "192.0.2.1", True))  # refused on the loop, not built
    [reply] = export.answer(wire.parse_query(data, "192.0.2.1", True))
    assert dns.message.from_wire(reply).rcode() == dns.rcode.REFUSED
    assert sample("resolverguard_export_refused_total", {"reason": "acl"}) == 1
    names = {spec.name for spec, _, _ in metrics.tally.series}  # one tally: --workers adds these up too
    assert {"resolverguard_export_refused_total", "resolverguard_export_secondary_serial"} <= names
    export.close()
