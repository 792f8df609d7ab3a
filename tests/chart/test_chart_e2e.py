"""The chart on the local cluster: a real helm install of the operator image `make images` built, the
operator pod Running and its Deployment Available, RBAC checked with `kubectl auth can-i --as`, the
Prometheus Operator objects accepted by a server-side dry run, and helm uninstall cleaning up."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import CHART, Helm, by_kind, documents, image_values
from tests.harness.conftest import make
from tests.support.cluster import Cluster, make_print, wait_until
from tests.support.prometheus import PrometheusServer

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
    ("scaledobjects.keda.sh", "create", ""),
    ("modeldeployments.modelplane.io", "watch", ""),
    ("modeldeployments.modelplane.io", "patch", "status"),
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


def install(
    helm: Helm, release: str, namespace: str, values: dict[str, Any], tmp_path: Path, *extra: str
) -> None:
    values_file = tmp_path / "install-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    helm.run("install", release, str(CHART), "-n", namespace, "-f", str(values_file), *extra)


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
    cluster.apply(
        {
            "apiVersion": "modelplane.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "probe"},
            "spec": {
                "model": {
                    "uri": "https://models.invalid/iris.joblib",
                    "format": "sklearn",
                    "allowPickle": True,
                },
                "replicas": 1,
            },
        },
        namespace=namespace,
    )
    for kind, subresource in (("deployment", ""), ("modeldeployment", "status")):
        wait_until(
            f"{kind} {subresource} written by the chart's operator (field manager {FIELD_MANAGER})",
            lambda: (FIELD_MANAGER, subresource) in managers_of(cluster, kind, namespace),  # noqa: B023
            timeout=90,
        )
    cluster.kubectl("delete", "modeldeployment", "probe", "-n", namespace, "--wait=true")


@pytest.fixture
def no_host_operator(cluster: Cluster) -> Iterator[None]:
    """The operator `make operator-up` runs on the host watches every namespace: stopped while the chart's
    operator is under test (so what reconciles the test's models is the chart's), started again after."""
    make("operator-down")
    yield
    make("operator-up")


@pytest.fixture
def release(cluster_helm: Helm, namespace: str) -> Iterator[str]:
    """A release name of the test's own (its ClusterRole is cluster-wide), uninstalled even on failure."""
    name = f"mp-{namespace.rsplit('-', 1)[-1]}"
    yield name
    cluster_helm.run("uninstall", name, "-n", namespace, "--ignore-not-found", check=False)


@pytest.fixture
def operator_values(namespace: str) -> dict[str, Any]:
    """Values for this cluster: the images `make images` built; only the test's namespace watched, and
    the CRDs left as `make install-crds` put them (they are cluster-wide; other tests use them)."""
    return {
        "image": image_values("operator"),
        "runtime": {"image": make_print("image-ref", "NAME=runtime")},
        "watchNamespaces": [namespace],
        "crds": {"enabled": False},
        "fieldManager": FIELD_MANAGER,
    }


def test_install_runs_the_operator_with_least_privilege_and_uninstall_cleans_up(
    cluster: Cluster,
    cluster_helm: Helm,
    namespace: str,
    release: str,
    no_host_operator: None,
    operator_values: dict[str, Any],
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
    assert status["ready"] and status["restartCount"] == 0, status
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
    cluster: Cluster, helm: Helm, namespace: str, crd_dir: Path
) -> None:
    """ServiceMonitor, PodMonitor and PrometheusRule against the Prometheus Operator's own CRDs."""
    for plural in MONITORING_CRDS:
        cluster.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            str(crd_dir / f"monitoring.coreos.com_{plural}.yaml"),
        )
        cluster.wait(f"crd/{plural}.monitoring.coreos.com", "condition=Established", timeout=60)
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
    assert refused.returncode != 0 and "for" in refused.stderr


def annotated_pod_targets(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    """file_sd targets of NAMESPACE's pods that ask to be scraped, by their prometheus.io/* annotations
    (the chart's for the operator, the operator's for model pods). Debian's Prometheus is built without
    kubernetes_sd_configs, so the test reads the pods from the API itself."""
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    targets = []
    for pod in pods:
        annotations = pod["metadata"].get("annotations") or {}
        if annotations.get("prometheus.io/scrape") != "true" or not pod["status"].get("podIP"):
            continue
        targets.append(
            {
                "targets": [f"{pod['status']['podIP']}:{annotations['prometheus.io/port']}"],
                "labels": {
                    "__metrics_path__": annotations.get("prometheus.io/path", "/metrics"),
                    "namespace": namespace,
                    "pod": pod["metadata"]["name"],
                },
            }
        )
    return targets


def scrape_config(targets_file: Path) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "scrape_configs": [
            {"job_name": "kubernetes-pods", "file_sd_configs": [{"files": [str(targets_file)]}]}
        ],
    }


def test_prometheus_scrapes_the_operator_pod_by_its_annotations(
    cluster: Cluster,
    cluster_helm: Helm,
    namespace: str,
    release: str,
    no_host_operator: None,
    operator_values: dict[str, Any],
    prometheus_bin_dir: Path,
    tmp_path: Path,
) -> None:
    """Debian's Prometheus on the host scrapes the chart's operator pod where its annotations say; after a
    reconcile, the operator's series are there."""
    install(cluster_helm, release, namespace, operator_values, tmp_path, "--wait", "--timeout", "5m")
    cluster.wait(f"deployment/{release}-modelplane", "condition=Available", namespace=namespace)
    assert_the_operator_reconciles(cluster, namespace)

    targets_file = tmp_path / "targets.json"
    targets_file.write_text(json.dumps(annotated_pod_targets(cluster, namespace)))
    with PrometheusServer.start(
        prometheus_bin_dir, scrape_config(targets_file), tmp_path / "prometheus"
    ) as prometheus:
        selector = f'namespace="{namespace}", pod=~"{release}-modelplane-.*"'
        (up,) = prometheus.wait_for_series(f"up{{{selector}}} == 1")
        assert up["metric"]["job"] == "kubernetes-pods"
        reconciles = prometheus.wait_for_series(f"modelplane_operator_reconciles_total{{{selector}}}")
        assert sum(float(sample["value"][1]) for sample in reconciles) >= 1
        prometheus.wait_for_series(f"modelplane_operator_reconcile_duration_seconds_count{{{selector}}}")
