"""The chart's alerting rules and dashboard: promtool checks and unit-tests the rules against fixture
series (tests/chart/data/alerts-test.yaml), and every metric they use is one the code exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import modelplane_contract as contract
import yaml
from modelplane import metrics as operator_metrics
from prometheus_client import Counter, Gauge, Histogram

from tests.chart.conftest import by_kind, documents
from tests.support.helm import CHART, Helm
from tests.support.prometheus import dashboard_queries

ALERTS = CHART / "files" / "alerts.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"
ALERT_TESTS = Path(__file__).parent / "data" / "alerts-test.yaml"
HISTOGRAM_SUFFIXES = ("bucket", "sum", "count")
EXPECTED_ALERTS = {
    "ModelplaneModelNotReady",
    "ModelplaneModelErrorRatioHigh",
    "ModelplaneModelLatencyHigh",
    "ModelplaneOperatorReconcileErrors",
    "ModelplaneLLMQueueGrowing",
}


def promtool(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(bin_dir / "promtool"), *args], check=False, capture_output=True, text=True, cwd=cwd, timeout=120
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def exported_metric_names() -> set[str]:
    """Every series name the runtime (contract.py) and the operator (metrics.py) export."""
    runtime = {value for key, value in vars(contract).items() if key.startswith("METRIC_")}
    # The contract names counters with _total; the others may be histograms (their series get suffixes).
    names = runtime | {f"{n}_{s}" for n in runtime if not n.endswith("_total") for s in HISTOGRAM_SUFFIXES}
    for collector in vars(operator_metrics).values():
        if isinstance(collector, Counter):
            names |= {f"{family.name}_total" for family in collector.describe()}
        elif isinstance(collector, Histogram):
            names |= {f"{family.name}_{s}" for family in collector.describe() for s in HISTOGRAM_SUFFIXES}
        elif isinstance(collector, Gauge):
            names |= {family.name for family in collector.describe()}
    return names


def metric_names_in(promql: str) -> set[str]:
    """Our series (modelplane_*) and the vLLM-named ones language models export (vllm:*)."""
    return set(re.findall(r"\b(modelplane_[a-z0-9_]+|vllm:[a-z0-9_]+)", promql))


def alert_exprs() -> dict[str, str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def test_promtool_checks_the_rules(prometheus_bin_dir: Path) -> None:
    result = promtool(prometheus_bin_dir, "check", "rules", str(ALERTS), cwd=CHART)
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout


def test_each_alert_fires_on_its_fixture_series(prometheus_bin_dir: Path) -> None:
    fixtures = yaml.safe_load(ALERT_TESTS.read_text())
    exercised = {
        case["alertname"]
        for test in fixtures["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert exercised == set(alert_exprs()) == EXPECTED_ALERTS
    result = promtool(prometheus_bin_dir, "test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert "SUCCESS" in result.stdout


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    exported = exported_metric_names()
    queries = [query for llm in (False, True) for _, query in dashboard_queries(llm=llm)]
    used = set().union(*(metric_names_in(q) for q in [*alert_exprs().values(), *queries]))
    assert used, "no modelplane metric found in the rules or dashboard"
    assert used <= exported, f"not exported by the runtime or the operator: {sorted(used - exported)}"


def test_prometheus_rule_embeds_the_rules_file(helm: Helm) -> None:
    values = {"metrics": {"prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus"}}}}
    (rule,) = by_kind(documents(helm.template(values)), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus"


def test_dashboard_configmap_holds_the_dashboard(helm: Helm) -> None:
    (configmap,) = by_kind(
        documents(helm.template({"metrics": {"grafanaDashboard": {"enabled": True}}})), "ConfigMap"
    )
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["modelplane.json"]) == json.loads(DASHBOARD.read_text())
