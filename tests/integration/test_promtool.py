"""promtool accepts the example Prometheus config and alert rules, and the key alerts fire on synthetic series.

Skipped when promtool is not installed, failed instead when CI=true (tests/realprog.py).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
from fakes import free_port
from prometheus_client.parser import text_string_to_metric_families
from realprog import require_program

pytestmark = pytest.mark.realprog

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "grafana" / "prometheus"

# promtool's rule unit tests: synthetic series in, expected alerts out (evaluated every 1m).
RULE_TESTS = """
rule_files: [alerts.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'resolverguard_typo_blocks_total{job="resolverguard",instance="mx1:9153",
                 protected_domain="army.mil",typo_class="tld_typo",action="nxdomain",qtype="MX"}'
        values: '0 0 0 1 1 1 1 1 1 1 1 1'
      - series: 'resolverguard_typo_blocks_total{job="resolverguard",instance="mx1:9153",
                 protected_domain="gmail.com",typo_class="transposition",action="nxdomain",qtype="A"}'
        values: '0x12'
    alert_rule_test:
      - eval_time: 2m
        alertname: ResolverGuardTypoLookupBlocked
        exp_alerts: []
      - eval_time: 4m
        alertname: ResolverGuardTypoLookupBlocked
        exp_alerts:
          - exp_labels: {severity: warning, job: resolverguard, instance: "mx1:9153",
                         protected_domain: army.mil, typo_class: tld_typo}
            exp_annotations:
              summary: Lookup of a typo-neighbour of army.mil blocked
              description: >-
                mx1:9153 blocked lookups of names that resemble army.mil
                (typo class tld_typo): about 1 in 5 minutes. A mail was probably
                addressed to a mistyped domain. protected_domain is the entry as configured (mil for navy.mil); the
                block event log (one JSON line per lookup) has the qname, the protected domain and the client.
      - eval_time: 11m
        alertname: ResolverGuardTypoLookupBlocked
        exp_alerts: []

  - interval: 1m
    input_series:
      - series: 'up{job="resolverguard",instance="mx1:9153"}'
        values: '1 1 0 0 0 0 0'
      - series: 'resolverguard_upstream_up{job="resolverguard",instance="mx1:9153",
                 upstream="192.0.2.53:53"}'
        values: '1 1 0 0 0 1 1'
      - series: 'resolverguard_policy_reloads_total{job="resolverguard",instance="mx1:9153",
                 result="failure"}'
        values: '0 0 1 1 1 1 1'
      - series: 'resolverguard_responses_total{job="resolverguard",instance="mx1:9153",
                 outcome="forwarded",rcode="NOERROR"}'
        values: '0+60x20'
      - series: 'resolverguard_responses_total{job="resolverguard",instance="mx1:9153",
                 outcome="servfail",rcode="SERVFAIL"}'
        values: '0+30x20'
    alert_rule_test:
      - eval_time: 5m
        alertname: ResolverGuardInstanceDown
        exp_alerts:
          - exp_labels: {severity: critical, job: resolverguard, instance: "mx1:9153"}
            exp_annotations:
              summary: resolverguard mx1:9153 is down
              description: "Prometheus cannot scrape mx1:9153/metrics: the process or its host is down."
      - eval_time: 4m
        alertname: ResolverGuardUpstreamDown
        exp_alerts:
          - exp_labels: {severity: critical, job: resolverguard, instance: "mx1:9153",
                         upstream: "192.0.2.53:53"}
            exp_annotations:
              summary: Upstream 192.0.2.53:53 of mx1:9153 is down
              description: >-
                The last exchange with upstream 192.0.2.53:53 timed out or failed, for at least a minute.
                Queries fail over to the other upstreams; with none left, clients get SERVFAIL.
      - eval_time: 6m
        alertname: ResolverGuardUpstreamDown
        exp_alerts: []
      - eval_time: 3m
        alertname: ResolverGuardPolicyReloadFailed
        exp_alerts:
          - exp_labels: {severity: warning, job: resolverguard, instance: "mx1:9153"}
            exp_annotations:
              summary: Policy reload failed on mx1:9153
              description: >-
                A changed zone, list or config file could not be loaded; the last good policy stays in force.
                Run `resolverguard lint` and see the WARNING log line for file and line.
      - eval_time: 16m
        alertname: ResolverGuardServfailRatioHigh
        exp_alerts:
          - exp_labels: {severity: warning, job: resolverguard, instance: "mx1:9153"}
            exp_annotations:
              summary: 33.33% of replies from mx1:9153 are SERVFAIL
              description: "More than 5% of the replies are SERVFAIL: upstreams failing, or internal errors."

  - interval: 1m
    input_series:
      - series: 'up{job="node"}'
        values: '1x15'
    alert_rule_test:
      - eval_time: 11m
        alertname: ResolverGuardMetricsAbsent
        exp_alerts:
          - exp_labels: {severity: critical, job: resolverguard}
            exp_annotations:
              summary: No resolverguard metrics
              description: >-
                No target of job "resolverguard" exports resolverguard_build_info: the scrape configuration is
                missing, or no instance is up.

  - interval: 1m
    input_series:
      - series: 'resolverguard_submission_refusals_total{job="resolverguard",instance="mx1:9153",
                 protected_domain="army.mil",typo_class="tld_typo",mode="reject"}'
        values: '0 0 0 1 1 1 1 1 1 1 1 1'
      - series: 'resolverguard_submission_refusals_total{job="resolverguard",instance="mx1:9153",
                 protected_domain="gmail.com",typo_class="tld_typo",mode="reject"}'
        values: '0x12'
      - series: 'resolverguard_exceptions_expiring{job="resolverguard",instance="mx1:9153"}'
        values: '0 0 1 1 0'
    alert_rule_test:
      - eval_time: 2m
        alertname: ResolverGuardSubmissionRefused
        exp_alerts: []
      - eval_time: 4m
        alertname: ResolverGuardSubmissionRefused
        exp_alerts:
          - exp_labels: {severity: warning, job: resolverguard, instance: "mx1:9153",
                         protected_domain: army.mil, typo_class: tld_typo, mode: reject}
            exp_annotations:
              summary: Submission to a typo-neighbour of army.mil refused at RCPT
              description: >-
                mx1:9153's policy service refused about 1 recipients in 5 minutes
                whose domain resembles army.mil (typo class tld_typo, mode
                reject) while the sender's mail client was connected: the sender read "Did you mean ...?".
                The event log (event submission_refusal) names the sender, SASL user and client.
      - eval_time: 11m
        alertname: ResolverGuardSubmissionRefused
        exp_alerts: []
      - eval_time: 1m
        alertname: ResolverGuardExceptionsExpiringSoon
        exp_alerts: []
      - eval_time: 3m
        alertname: ResolverGuardExceptionsExpiringSoon
        exp_alerts:
          - exp_labels: {severity: info, job: resolverguard, instance: "mx1:9153"}
            exp_annotations:
              summary: 1 exception(s) end within 7 days
              description: >-
                mx1:9153 has exceptions (zones/exceptions.toml) that end within 7 days; after that the
                names are blocked again. Renew them (resolverguard exceptions add NAME --replace ...) or tell their
                owners (resolverguard exceptions list).
      - eval_time: 4m
        alertname: ResolverGuardExceptionsExpiringSoon
        exp_alerts: []
"""


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    promtool = require_program("promtool")
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_check_config_accepts_the_example_scrape_config_and_its_rule_files(tmp_path):
    # rule_files are relative to the config file: check a copy of the folder, from another directory
    shutil.copytree(PROMETHEUS_DIR, tmp_path / "prometheus")
    done = _promtool("check", "config", str(tmp_path / "prometheus" / "prometheus.yml"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout + done.stderr


def test_check_rules_accepts_the_alert_rules():
    done = _promtool("check", "rules", str(PROMETHEUS_DIR / "alerts.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_alerts_fire_on_synthetic_series(tmp_path):
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "alerts_test.yml").write_text(RULE_TESTS)
    done = _promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------- every block alertable, from a real guard's series


def scrape_typo_blocks(url: str) -> dict[tuple, float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        tuple(sorted(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "resolverguard_typo_blocks_total"
    }


def series_line(labels: tuple, values: str) -> str:
    body = ",".join(f'{k}="{v}"' for k, v in (("job", "resolverguard"), ("instance", "mx1:9153"), *labels))
    return f"      - series: 'resolverguard_typo_blocks_total{{{body}}}'\n        values: '{values}'\n"


def expected_alert(entry: str, typo_class: str) -> str:
    description = (
        f"mx1:9153 blocked lookups of names that resemble {entry} (typo class {typo_class}): about 1 in 5 "
        "minutes. A mail was probably addressed to a mistyped domain. protected_domain is the entry as "
        "configured (mil for navy.mil); the block event log (one JSON line per lookup) has the qname, "
        "the protected domain and the client."
    )
    return (
        f"          - exp_labels: {{severity: warning, job: resolverguard, instance: 'mx1:9153', "
        f"protected_domain: '{entry}', typo_class: {typo_class}}}\n"
        f"            exp_annotations:\n              summary: 'Lookup of a typo-neighbour of {entry} blocked'\n"
        f"              description: '{description}'\n"
    )


@pytest.mark.parametrize("domains", [0, 200], ids=["tld_entry", "200_domains"])
def test_the_first_block_fires_the_alert_from_the_series_a_guard_exposes(tmp_path, start_guard, domains):
    """Scrape a real guard before and after one block, feed both scrapes to promtool: the alert must fire.

    A series that appears only with the first block starts at 1, and increase() over it stays 0: the
    alert would never fire (entries like mil, and more than 50 protected domains, did that).
    """
    zones = tmp_path / "zones"
    zones.mkdir()
    names = [f"brand{i:03d}mail.com" for i in range(1, domains + 1)]
    (zones / "a.protect").write_text("\n".join(["mil", *names]) + "\n")
    port = free_port()
    guard = start_guard("--upstream", "127.0.0.1:9", "--metrics", f"127.0.0.1:{port}", zones=zones)
    url = f"http://127.0.0.1:{port}/metrics"
    before = scrape_typo_blocks(url)
    blocked = ["navy.ml", *(["rband200mail.com"] if domains else [])]  # navy.mil under mil; brand200mail.com
    for name in blocked:
        assert guard.query(name, "MX").rcode() == dns.rcode.NXDOMAIN
    deadline = time.monotonic() + 10
    while sum(scrape_typo_blocks(url).values()) < len(blocked):  # counted just after the reply is sent
        assert time.monotonic() < deadline
        time.sleep(0.05)
    after = scrape_typo_blocks(url)
    grown = {k for k in after if after[k] > before.get(k, 0)}
    entries = {dict(k)["protected_domain"] for k in grown}
    assert entries == {"mil", *(["brand200mail.com"] if domains else [])}, grown
    lines = []
    for labels in sorted(set(before) | set(after)):
        if dict(labels)["protected_domain"] in entries:  # the alert groups by entry: the others cannot matter
            old = "_" if labels not in before else f"{before[labels]:g}"
            lines.append(series_line(labels, " ".join([old] * 3 + [f"{after[labels]:g}"] * 8)))
    expected = "".join(
        expected_alert(dict(k)["protected_domain"], dict(k)["typo_class"])
        for k in sorted(grown, key=lambda k: dict(k)["protected_domain"])
    )
    tests = (
        "rule_files: [alerts.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n"
        + "".join(lines)
        + "    alert_rule_test:\n      - eval_time: 5m\n"
        "        alertname: ResolverGuardTypoLookupBlocked\n        exp_alerts:\n" + expected
    )
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "blocks_test.yml").write_text(tests)
    done = _promtool("test", "rules", "blocks_test.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
