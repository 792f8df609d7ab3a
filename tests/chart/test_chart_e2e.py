"""The chart on the local cluster: a real helm install of the operator image `make images` built, the
operator pod Running and its Deployment Available, RBAC checked with `kubectl auth can-i --as`, the
Prometheus Operator objects accepted by a server-side dry run, and helm uninstall cleaning up."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import modelplane_contract as contract
import pytest
import yaml

from tests.chart.conftest import by_kind, documents, install, release_values
from tests.support.cluster import Cluster, wait_until
from tests.support.examples import credentials_secret
from tests.support.helm import Helm
from tests.support.modeldeployments import (
    condition,
    model_deployment,
    predict_v1,
    s3_model_deployment,
    wait_ready,
    wait_reason,
    wait_service,
)
from tests.support.models import SklearnModel
from tests.support.prometheus import PrometheusServer, chart_prometheus_config, dashboard_queries
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e

FIELD_MANAGER = "modelplane-chart-test"
MONITORING_CRDS = ("servicemonitors", "podmonitors", "prometheusrules")
# What the examples make the operator do in a watched namespace (resource, verb, subresource).
NEEDED_IN_NAMESPACE = [
    ("deployments.apps", "create", ""),
    ("deployments.apps", "patch", ""),
    ("deployments.apps", "delete", ""),
    ("services", "create", ""),
    ("horizontalpodautoscalers.autoscaling", "create", ""),
    ("poddisruptionbudgets.policy", "create", ""),
    ("networkpolicies.networking.k8s.io", "create", ""),
    ("scaledobjects.keda.sh", "create", ""),
    ("modeldeployments.modelplane.io", "watch", ""),
    ("modeldeployments.modelplane.io", "patch", "status"),
    ("modeldeployments.modelplane.io", "update", "finalizers"),
    ("pods", "list", ""),
    ("secrets", "get", ""),
    ("events.events.k8s.io", "create", ""),
]
# Never: a Secret cache (list/watch), writes to ModelDeployments' spec, or anything cluster-admin-like.
FORBIDDEN_IN_NAMESPACE = [
    ("secrets", "list", ""),
    ("secrets", "watch", ""),
    ("secrets", "create", ""),
    ("modeldeployments.modelplane.io", "patch", ""),
    ("modeldeployments.modelplane.io", "delete", ""),
    ("configmaps", "get", ""),
    ("pods", "delete", ""),
    ("roles.rbac.authorization.k8s.io", "create", ""),
]


def can_i(
    cluster: Cluster, release: str, sa_namespace: str, verb: str, resource: str, subresource: str, *scope: str
) -> bool:
    args = [
        "auth",
        "can-i",
        verb,
        resource,
        f"--as=system:serviceaccount:{sa_namespace}:{release}-modelplane",
    ]
    if subresource:
        args.append(f"--subresource={subresource}")
    answer = cluster.kubectl(*args, *scope, check=False).stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i {verb} {resource}: {answer!r}"
    return answer == "yes"


def managers(obj: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (entry["manager"], entry.get("subresource", "")) for entry in obj["metadata"].get("managedFields", [])
    }


def managers_of(cluster: Cluster, kind: str, namespace: str) -> set[tuple[str, str]]:
    """The field managers of the probe model's KIND (kubectl hides managedFields by default)."""
    args = ("get", kind, "probe", "-n", namespace, "-o", "json", "--show-managed-fields")
    result = cluster.kubectl(*args, check=False)
    return managers(json.loads(result.stdout)) if result.returncode == 0 else set()


def assert_the_operator_reconciles(cluster: Cluster, namespace: str) -> None:
    """A ModelDeployment in the watched namespace gets its Deployment and its status from the chart's
    operator: its own field manager is on both (the host operator, if running, uses another)."""
    model = {"uri": "https://models.invalid/iris.joblib", "format": "sklearn", "allowPickle": True}
    cluster.apply(model_deployment("probe", {"model": model, "replicas": 1}), namespace=namespace)
    for kind, subresource in (("deployment", ""), ("modeldeployment", "status")):
        wait_until(
            f"{kind} {subresource} written by the chart's operator (field manager {FIELD_MANAGER})",
            lambda: (FIELD_MANAGER, subresource) in managers_of(cluster, kind, namespace),  # noqa: B023
            timeout=90,
        )
    cluster.kubectl("delete", "modeldeployment", "probe", "-n", namespace, "--wait=true")


@pytest.fixture
def release(cluster_helm: Helm, namespace: str) -> Iterator[str]:
    """A release name of the test's own (its ClusterRole is cluster-wide), uninstalled even on failure."""
    name = f"mp-{namespace.rsplit('-', 1)[-1]}"
    yield name
    cluster_helm.run("uninstall", name, "-n", namespace, "--ignore-not-found", check=False)


@pytest.fixture
def operator_values(namespace: str) -> dict[str, Any]:
    """Values for this cluster, watching only the test's namespace."""
    return release_values([namespace], FIELD_MANAGER)


@pytest.mark.exclusive
def test_install_runs_the_operator_with_least_privilege_and_uninstall_cleans_up(
    cluster: Cluster,
    cluster_helm: Helm,
    namespace: str,
    release: str,
    no_host_operator: None,
    operator_values: dict[str, Any],
    third_party_crds: set[str],
    tmp_path: Path,
) -> None:
    install(cluster_helm, release, namespace, operator_values, tmp_path, "--wait", "--timeout", "5m")

    cluster.wait(f"deployment/{release}-modelplane", "condition=Available", namespace=namespace)
    pods = cluster.kubectl(
        "get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}", "-o", "json"
    ).stdout
    (pod,) = yaml.safe_load(pods)["items"]
    assert pod["status"]["phase"] == "Running"
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"], status
    assert status["restartCount"] == 0, status
    endpoints = cluster.get("endpoints", f"{release}-modelplane-metrics", namespace=namespace)
    assert endpoints["subsets"][0]["ports"][0]["port"] == 8080
    assert_the_operator_reconciles(cluster, namespace)

    in_namespace = ("-n", namespace)
    for resource, verb, sub in NEEDED_IN_NAMESPACE:
        assert can_i(cluster, release, namespace, verb, resource, sub, *in_namespace), (
            f"cannot {verb} {resource} {sub}"
        )
    for resource, verb, sub in FORBIDDEN_IN_NAMESPACE:
        assert not can_i(cluster, release, namespace, verb, resource, sub, *in_namespace), (
            f"may {verb} {resource} {sub}"
        )
    # Watching one namespace grants nothing elsewhere, and never Secrets cluster-wide.
    assert not can_i(cluster, release, namespace, "get", "secrets", "", "-n", "kube-system")
    assert not can_i(cluster, release, namespace, "create", "deployments.apps", "", "-n", "default")
    assert not can_i(cluster, release, namespace, "list", "secrets", "", "--all-namespaces")
    assert can_i(cluster, release, namespace, "get", "customresourcedefinitions.apiextensions.k8s.io", "")

    cluster_helm.run("uninstall", release, "-n", namespace, "--wait")
    for kind in ("deployment", "serviceaccount", "service", "role", "rolebinding"):
        leftovers = cluster.kubectl(
            "get", kind, "-n", namespace, "-l", f"app.kubernetes.io/instance={release}", "-o", "name"
        )
        assert leftovers.stdout.strip() == "", f"left after uninstall: {leftovers.stdout}"
    assert cluster.kubectl("get", "clusterrole", f"{release}-modelplane", check=False).returncode != 0


def test_cluster_wide_install_reads_one_secret_at_a_time(
    cluster: Cluster,
    cluster_helm: Helm,
    namespace: str,
    release: str,
    operator_values: dict[str, Any],
    third_party_crds: set[str],
    tmp_path: Path,
) -> None:
    """Watching every namespace (a ClusterRole): still get-only on Secrets. Replicas 0, so this operator
    never runs next to the host operator; RBAC is what is checked."""
    values = {**operator_values, "watchNamespaces": [], "replicas": 0}
    install(cluster_helm, release, namespace, values, tmp_path)
    try:
        for resource, verb, sub in NEEDED_IN_NAMESPACE:
            assert can_i(cluster, release, namespace, verb, resource, sub, "-n", "default"), (
                f"cannot {verb} {resource}"
            )
        assert can_i(cluster, release, namespace, "get", "secrets", "", "-n", "kube-system")
        assert not can_i(cluster, release, namespace, "list", "secrets", "", "--all-namespaces")
        assert not can_i(cluster, release, namespace, "watch", "secrets", "", "--all-namespaces")
        assert not can_i(cluster, release, namespace, "list", "secrets", "", "-n", namespace)
        assert can_i(cluster, release, namespace, "create", "clusterkopfpeerings.kopf.dev", "")
    finally:
        cluster_helm.run("uninstall", release, "-n", namespace, "--wait")
    wait_until(
        "the release's ClusterRole to be deleted",
        lambda: cluster.kubectl("get", "clusterrole", f"{release}-modelplane", check=False).returncode != 0,
        timeout=60,
    )


def test_monitoring_objects_pass_a_server_side_dry_run(
    cluster: Cluster, helm: Helm, namespace: str, third_party_crds: set[str]
) -> None:
    """ServiceMonitor, PodMonitor and PrometheusRule against the Prometheus Operator's own CRDs."""
    assert {f"{plural}.monitoring.coreos.com" for plural in MONITORING_CRDS} <= third_party_crds
    values = {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "podMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
        }
    }
    docs = documents(helm.template(values, namespace=namespace))
    monitoring = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert sorted(d["kind"] for d in monitoring) == ["PodMonitor", "PrometheusRule", "ServiceMonitor"]
    applied = cluster.kubectl(
        "apply",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        "-o",
        "json",
        input=yaml.safe_dump_all(monitoring),
    ).stdout
    kinds = sorted(item["kind"] for item in yaml.safe_load(applied)["items"])
    assert kinds == ["PodMonitor", "PrometheusRule", "ServiceMonitor"]
    # A broken object is refused by the same dry run, so the check above has teeth.
    (rule,) = by_kind(monitoring, "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    refused = cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(rule), check=False
    )
    assert refused.returncode != 0
    assert "for" in refused.stderr


@pytest.mark.exclusive
def test_prometheus_discovers_the_operator_and_model_pods_and_the_dashboard_has_data(
    cluster: Cluster,
    cluster_helm: Helm,
    namespace: str,
    release: str,
    no_host_operator: None,
    operator_values: dict[str, Any],
    prometheus_bin_dir: Path,
    s3: S3Server,
    iris_models: dict[str, SklearnModel],
    tmp_path: Path,
) -> None:
    """Prometheus with Kubernetes service discovery (the chart's scrape job) finds the chart's operator pod
    and a model pod by their annotations; after real predictions the request counter and latency histogram
    are there, every dashboard panel's query returns series, and the chart's alert rules evaluate (the
    not-ready one pending for a model that a ResourceQuota keeps from being deployed)."""
    install(cluster_helm, release, namespace, operator_values, tmp_path, "--wait", "--timeout", "5m")
    cluster.wait(f"deployment/{release}-modelplane", "condition=Available", namespace=namespace)
    # The operator's Deployment and one model's fit the quota: the second model's apply is refused, a
    # real API error for the operator's metrics, and a ModelDeployment that is not Ready for the alert.
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "two-deployments"},
            "spec": {"hard": {"count/deployments.apps": "2"}},
        },
        namespace=namespace,
    )
    iris = iris_models["v1"]
    cluster.apply([credentials_secret(s3), s3_model_deployment("iris", iris)], namespace=namespace)
    wait_ready(cluster, namespace, "iris")
    cluster.apply(s3_model_deployment("over-quota", iris), namespace=namespace)
    over_quota = wait_reason(cluster, namespace, "over-quota", {"ApplyFailed"}, timeout=90)
    assert "exceeded quota" in condition(over_quota, "Ready")["message"]

    requests = 20
    wait_service(cluster, namespace, "iris")
    for _ in range(requests):
        assert predict_v1(cluster, namespace, "iris", "iris", iris.sample) == iris.expected()

    with PrometheusServer.start(
        prometheus_bin_dir, chart_prometheus_config(cluster, namespace), tmp_path / "prometheus"
    ) as prometheus:
        operator_pod = f'namespace="{namespace}", pod=~"{release}-modelplane-.*"'
        model_pod = f'namespace="{namespace}", pod=~"iris-.*"'
        for selector in (operator_pod, model_pod):
            (up,) = prometheus.wait_for_series(f"up{{{selector}}} == 1")
            assert up["metric"]["job"] == "kubernetes-pods"

        served = prometheus.wait_for_series(
            f'sum(modelplane_requests_total{{{model_pod}, model="iris", code="200"}}) >= {requests}'
        )
        assert float(served[0]["value"][1]) >= requests
        prometheus.wait_for_series(
            f'sum(modelplane_request_duration_seconds_count{{{model_pod}, model="iris"}}) >= {requests}'
        )
        refused = prometheus.wait_for_series(
            f'modelplane_operator_api_errors_total{{{operator_pod}, verb="apply", code="403"}}'
        )
        assert float(refused[0]["value"][1]) >= 1
        # rate() needs two samples of a counter after it moved: predict again while Prometheus watches,
        # as a consumer would through the gateway (its client id header; the usage panel counts those).
        consumer = {contract.CONSUMER_HEADER: "dashboard-test.1"}
        for _ in range(requests):
            predict_v1(cluster, namespace, "iris", "iris", iris.sample, headers=consumer)
        for title, query in dashboard_queries(llm=False):  # LLM panels: test_llm_e2e.py
            assert prometheus.wait_for_series(query, timeout=60), title

        pending = prometheus.wait_for_series(
            f'ALERTS{{alertname="ModelplaneModelNotReady", namespace="{namespace}", alertstate="pending"}}'
        )
        assert pending
        rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
        assert rules
        assert all(rule["health"] == "ok" for rule in rules), [
            (rule["name"], rule["health"], rule.get("lastError")) for rule in rules
        ]
