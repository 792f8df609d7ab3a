"""KEDA's and the Prometheus Operator's CRDs (from `make -s crd-dir`) validate objects in the real
apiserver without their controllers: valid ones pass `--dry-run=server`, malformed ones are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cluster import Cluster

pytestmark = pytest.mark.e2e

EXPECTED_CRDS = {
    "scaledobjects.keda.sh",
    "scaledjobs.keda.sh",
    "triggerauthentications.keda.sh",
    "clustertriggerauthentications.keda.sh",
    "servicemonitors.monitoring.coreos.com",
    "podmonitors.monitoring.coreos.com",
    "prometheusrules.monitoring.coreos.com",
}


def scaled_object(**spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "scaleTargetRef": {"name": "model-server"},
        "minReplicaCount": 0,
        "maxReplicaCount": 5,
        "triggers": [
            {
                "type": "prometheus",
                "metadata": {
                    "serverAddress": "http://prometheus.monitoring:9090",
                    "query": "sum(rate(requests_total[1m]))",
                    "threshold": "10",
                },
            }
        ],
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "so"},
        "spec": spec,
    }


def service_monitor(interval: str = "15s") -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "sm"},
        "spec": {
            "selector": {"matchLabels": {"app": "model-server"}},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": interval}],
        },
    }


def pod_monitor(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "pm"},
        "spec": spec,
    }


def prometheus_rule(rule: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "rules"},
        "spec": {"groups": [{"name": "model-server", "rules": [rule]}]},
    }


VALID_OBJECTS = {
    "ScaledObject": scaled_object(),
    "ServiceMonitor": service_monitor(),
    "PodMonitor": pod_monitor(
        selector={"matchLabels": {"app": "model-server"}}, podMetricsEndpoints=[{"port": "metrics"}]
    ),
    "PrometheusRule": prometheus_rule(
        {"alert": "ModelServerDown", "expr": "up{job='model-server'} == 0", "for": "5m"}
    ),
}

# (object, a phrase the apiserver's refusal must contain: the field that is wrong)
MALFORMED_OBJECTS = {
    "scaledobject-without-triggers": (
        {**scaled_object(), "spec": {"scaleTargetRef": {"name": "model-server"}}},
        "spec.triggers: Required value",
    ),
    "scaledobject-negative-min-replicas": (scaled_object(minReplicaCount=-1), "spec.minReplicaCount"),
    "servicemonitor-bad-interval": (service_monitor(interval="often"), "spec.endpoints[0].interval"),
    "podmonitor-without-selector": (pod_monitor(podMetricsEndpoints=[{"port": "metrics"}]), "spec.selector"),
    "prometheusrule-without-expr": (prometheus_rule({"alert": "NoExpr"}), "spec.groups[0].rules[0].expr"),
}


def dry_run(cluster: Cluster, namespace: str, obj: dict[str, Any]) -> tuple[int, str]:
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(obj), check=False
    )
    return result.returncode, result.stdout + result.stderr


def test_crd_dir_holds_the_expected_crds(crd_dir: Path) -> None:
    names = {yaml.safe_load(path.read_text())["metadata"]["name"] for path in crd_dir.glob("*.yaml")}
    assert names == EXPECTED_CRDS


@pytest.mark.parametrize("kind", sorted(VALID_OBJECTS))
def test_valid_object_passes_server_dry_run(
    cluster: Cluster, third_party_crds: set[str], namespace: str, kind: str
) -> None:
    obj = VALID_OBJECTS[kind]
    code, output = dry_run(cluster, namespace, obj)
    assert code == 0, output
    assert "(server dry run)" in output
    # A dry run stores nothing.
    listed = cluster.kubectl("get", kind.lower(), "-n", namespace, "-o", "name").stdout
    assert listed.strip() == ""


@pytest.mark.parametrize("case", sorted(MALFORMED_OBJECTS))
def test_malformed_object_is_refused(
    cluster: Cluster, third_party_crds: set[str], namespace: str, case: str
) -> None:
    obj, expected_field = MALFORMED_OBJECTS[case]
    code, output = dry_run(cluster, namespace, obj)
    assert code != 0, f"{case} was accepted:\n{output}"
    assert "is invalid" in output, output
    assert expected_field in output, output
