"""The Grafana dashboard and the alert rules work against a real Prometheus scraping a real resolverguard.

A resolverguard process (stub upstream) and a Prometheus scraping it every second run on 127.0.0.1;
normal and typo queries go through the guard, then every dashboard query and the data part of every
alert rule are evaluated through the Prometheus HTTP API and must return series.
Skipped when prometheus is not installed, failed instead when CI=true (tests/realprog.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import dns.rcode
import pytest
from fakes import free_port, stop_process
from prometheus_client.parser import text_string_to_metric_families
from realprog import require_program

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "resolverguard.json"
ALERTS = ROOT / "grafana" / "prometheus" / "alerts.yml"
JOB = "resolverguard"  # the job name the alert rules expect (grafana/prometheus/prometheus.yml)

_GRAFANA_VARS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1m", "job": ".*", "instance": ".*"}
_VAR = re.compile(r"\$\{?(\w+)(?::\w+)?\}?")
# An alert expression is "<data> <op> <number>" or "absent(<data>)": the data part must return series.
_COMPARISON = re.compile(r"\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?\s*$", re.I)
_ABSENT = re.compile(r"^\s*absent\((.*)\)\s*$", re.S)
_SELECTOR = re.compile(r"(resolverguard_\w+)(\{[^}]*\})?")
_METRIC_NAME = re.compile(r"\bresolverguard_[a-z0-9_]*[a-z0-9]")


def alert_data_part(expr: str) -> str:
    """The expression an alert compares or tests for absence: `rate(x[5m]) / rate(y[5m]) > 0.05` -> the ratio."""
    if m := _ABSENT.match(expr):
        return m.group(1)
    data = _COMPARISON.sub("", expr)
    if data == expr:
        raise AssertionError(f"alert expression is neither '<data> <op> <number>' nor 'absent(<data>)': {expr}")
    return data


def grafana_to_promql(expr: str) -> str:
    """Replace dashboard variables ($job, $__rate_interval, ...) by concrete values."""

    def value(m: re.Match) -> str:
        if m.group(1) not in _GRAFANA_VARS:
            raise AssertionError(f"unknown dashboard variable {m.group(0)} in {expr}")
        return _GRAFANA_VARS[m.group(1)]

    return _VAR.sub(value, expr)


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_targets(dash: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every query, rows' nested panels included."""
    found = []
    panels = list(dash["panels"])
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    return found


def variable_queries(dash: dict) -> list[tuple[str, str, str]]:
    """(variable, selector, label) of every label_values(selector, label) template variable."""
    found = []
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        assert m, f"variable {var['name']}: expected label_values(selector, label), got {query}"
        found.append((var["name"], m.group(1), m.group(2)))
    return found


# ------------------------------------------------------------------ static checks (no Prometheus needed)


def test_dashboard_shape():
    dash = dashboard()
    assert dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"job", "instance"} <= variables.keys()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]


def test_every_dashboard_selector_filters_on_job_and_instance():
    for title, expr in dashboard_targets(dashboard()):
        for name, matchers in _SELECTOR.findall(expr):
            assert matchers.startswith('{job=~"$job",instance=~"$instance"'), f"{title}: {name}{matchers}"


def test_alert_expressions_have_a_checkable_data_part():
    text = ALERTS.read_text()
    exprs = re.findall(r"^\s*expr:\s*(?:>-\s*)?(.+?)(?=^\s*(?:for|labels|annotations):)", text, re.M | re.S)
    assert len(exprs) == text.count("- alert:")
    for expr in exprs:
        assert alert_data_part(" ".join(expr.split()))
    assert alert_data_part("a / b > 0.05") == "a / b"
    assert alert_data_part('up{job="x"} == 0') == 'up{job="x"}'
    assert alert_data_part('absent(x{job="y"})') == 'x{job="y"}'
    with pytest.raises(AssertionError):
        alert_data_part("rate(x[5m])")


def test_observability_doc_lists_every_declared_metric():
    from prometheus_client import CollectorRegistry

    from resolverguard.metrics import Metrics

    doc = (ROOT / "docs" / "observability.md").read_text(encoding="utf-8")
    families = Metrics(CollectorRegistry()).registry.collect()
    declared = {f.name + ("_total" if f.type == "counter" else "") for f in families}
    assert len(declared) > 20
    missing = sorted(name for name in declared if f"| `{name}` |" not in doc)
    assert not missing, f"docs/observability.md has no table row for {missing}"


# ------------------------------------------------------------------ helpers for the live test


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (127.0.0.1 only)
        return resp.read().decode()


class Prometheus:
    """A real Prometheus on 127.0.0.1 with its data in a temporary directory; stopped by PID."""

    def __init__(self, binary: str, workdir: Path, target: str, rule_file: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(
            json.dumps(
                {  # JSON is YAML
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(rule_file)],
                    "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
                }
            )
        )
        self.log = workdir / "prometheus.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        self.wait(lambda: http_get(f"{self.url}/-/ready", 1).strip() != "", 20, "ready")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, ready, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({self.proc.returncode}):\n{self.output()}")
            try:
                if result := ready():
                    return result
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus: timed out waiting for {what}\n{self.output()}")
            time.sleep(0.2)

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            body = json.loads(http_get(url))
        except urllib.error.HTTPError as exc:  # 400 on a bad query: show Prometheus' message
            raise AssertionError(f"{path} {params}: {exc.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return data["result"]

    def stop(self) -> None:
        stop_process(self.proc)


def exposed_names(metrics_text: str) -> set[str]:
    """Sample names (x_total, x_bucket, x_created, gauges) plus histogram base names, as in /metrics."""
    names = set()
    for family in text_string_to_metric_families(metrics_text):
        if family.type == "histogram":
            names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


# ------------------------------------------------------------------ the live test


@pytest.mark.realprog
def test_dashboard_and_alert_queries_return_data_from_a_real_prometheus(upstream, start_guard, tmp_path):
    binary = require_program("prometheus")
    upstream.on("army.mil", "A", "army.mil. 300 A 192.0.2.1")
    upstream.on("army.mil", "MX", "army.mil. 300 MX 10 mx.army.mil.")
    upstream.on("mail.com", "A", "mail.com. 300 A 192.0.2.2")
    zones = tmp_path / "guard-zones"
    zones.mkdir()
    shutil.copy(ROOT / "zones" / "10-overrides.rpz", zones)  # an override zone: rules and rpz_hits series
    metrics_port = free_port()
    config = tmp_path / "guard.toml"  # the SMTP sink on: its panel and alert read its series too
    config.write_text(  # the policy service on too: its panels and alert read its series
        f'[smtp_sink]\nlisten = ["127.0.0.1:{free_port()}"]\n[policy]\nlisten = ["127.0.0.1:{free_port()}"]\n'
    )
    guard = start_guard(
        "--config",
        str(config),
        "--upstream",
        upstream.address,
        "--metrics",
        f"127.0.0.1:{metrics_port}",
        "--protect",
        "army.mil",
        "--protect",
        "gmail.com",
        zones=zones,
    )
    target = f"127.0.0.1:{metrics_port}"
    metrics_text = http_get(f"http://{target}/metrics")

    # Names: every resolverguard_* name in grafana/ and in README.md (if it lists any) is exposed.
    exposed = exposed_names(metrics_text)
    documents = [p for p in (ROOT / "grafana").rglob("*") if p.is_file()]
    documents += [p for p in (ROOT / "README.md", ROOT / "docs" / "observability.md") if p.exists()]
    for doc in documents:
        unknown = set(_METRIC_NAME.findall(doc.read_text(encoding="utf-8"))) - exposed
        assert not unknown, f"{doc.relative_to(ROOT)} names metrics that /metrics does not expose: {sorted(unknown)}"

    (tmp_path / "prom").mkdir()
    rule_file = tmp_path / "prom" / "alerts.yml"
    shutil.copy(ALERTS, rule_file)
    prom = Prometheus(binary, tmp_path / "prom", target, rule_file)
    try:
        prom.wait(lambda: prom.query(f'resolverguard_build_info{{job="{JOB}"}}'), 15, "the first scrape")

        for name, qtype, rcode in [
            ("army.mil", "A", dns.rcode.NOERROR),
            ("army.mil", "A", dns.rcode.NOERROR),  # forwarded, cached
            ("army.mil", "MX", dns.rcode.NOERROR),
            ("army.mil", "MX", dns.rcode.NOERROR),
            ("mail.com", "A", dns.rcode.NOERROR),
            ("mail.com", "A", dns.rcode.NOERROR),  # near gmail.com, allowed
            ("army.ml", "MX", dns.rcode.NXDOMAIN),
            ("gmial.com", "A", dns.rcode.NXDOMAIN),  # typo-neighbours
            ("mail.army.ml", "A", dns.rcode.NXDOMAIN),
            ("army.ml", "MX", dns.rcode.NXDOMAIN),
            ("nothing.example", "A", dns.rcode.NXDOMAIN),  # NXDOMAIN from the upstream
            ("phish.example", "A", dns.rcode.NXDOMAIN),  # override rule
        ]:
            assert guard.query(name, qtype).rcode() == rcode, (name, qtype)

        # The blocks reached Prometheus, and the alert for them fires (for: 0s, evaluated every second).
        firing = f'ALERTS{{alertname="ResolverGuardTypoLookupBlocked",alertstate="firing",job="{JOB}"}}'
        alerts = prom.wait(lambda: len(r := prom.query(firing)) >= 2 and r, 20, "ResolverGuardTypoLookupBlocked")
        assert {a["metric"]["protected_domain"] for a in alerts} == {"army.mil", "gmail.com"}
        hits = prom.wait(
            lambda: prom.query(f'sum(resolverguard_responses_total{{job="{JOB}",outcome="cached"}}) >= 3'),
            10,
            "cache hits",
        )
        assert hits

        dash = dashboard()
        empty = []
        for title, expr in dashboard_targets(dash):
            if not prom.query(grafana_to_promql(expr)):
                empty.append(f"panel {title!r}: {expr}")
        for variable, selector, label in variable_queries(dash):
            result = prom.query(grafana_to_promql(selector))
            if not any(label in r["metric"] for r in result):
                empty.append(f"variable {variable}: label_values({selector}, {label})")

        groups = prom.api("rules", type="alert")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert len(rules) == ALERTS.read_text().count("- alert:"), "Prometheus did not load every alert rule"
        for rule in rules:
            assert rule["health"] == "ok", rule
            if not prom.query(alert_data_part(rule["query"])):
                empty.append(f"alert {rule['name']}: {alert_data_part(rule['query'])}")
        assert not empty, "queries without data:\n" + "\n".join(empty)

        # A few values, not just presence: the ratio is 0/N, not NaN, and the upstream is healthy.
        ratio = next(r["query"] for r in rules if r["name"] == "ResolverGuardServfailRatioHigh")
        servfail = prom.query(alert_data_part(ratio))
        assert float(servfail[0]["value"][1]) == 0.0
        assert float(prom.query('min(resolverguard_upstream_up{job="resolverguard"})')[0]["value"][1]) == 1.0
    finally:
        prom.stop()
