"""helm, built from its Go module by `make helm`: version stamps, templating offline, and a real
install/uninstall of a trivial chart into the local cluster."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.cluster import REPO_ROOT, Cluster, make_print, wait_until
from tests.support.helm import Helm

pytestmark = pytest.mark.e2e

CHART = REPO_ROOT / "tests" / "harness" / "data" / "trivial-chart"


def test_helm_version_is_the_built_one(helm: Helm) -> None:
    expected = make_print("helm-version")
    assert expected.startswith("v3.")
    assert helm.run("version", "--template", "{{.Version}}").stdout == expected
    assert helm.run("version", "--template", "{{.GitTreeState}}").stdout == "clean"


def test_helm_template_assumes_the_cluster_kubernetes_version(helm: Helm, bin_dir: Path) -> None:
    """Offline, helm falls back to its built-in Kubernetes version: the cluster's, not helm's default 1.20
    (the chart's kubeVersion constraint would refuse 1.20)."""
    kubectl = subprocess.run(
        [str(bin_dir / "kubectl"), "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    client = json.loads(kubectl.stdout)["clientVersion"]
    out = helm.run("template", "demo", str(CHART)).stdout
    configmap = yaml.safe_load(out)
    assert configmap["data"]["kubeVersion"] == f"v{client['major']}.{client['minor']}.0"
    linted = helm.run("lint", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in linted.stdout


def test_helm_install_and_uninstall(cluster_helm: Helm, cluster: Cluster, namespace: str) -> None:
    namespaced = ["--namespace", namespace]
    cluster_helm.run("install", "demo", str(CHART), *namespaced, "--set", "greeting=hi", "--wait")

    configmap = cluster.get("configmap", "demo-settings", namespace=namespace)
    assert configmap["data"]["greeting"] == "hi"
    server_version = cluster.kubectl("version", "-o", "yaml").stdout
    assert configmap["data"]["kubeVersion"] == yaml.safe_load(server_version)["serverVersion"]["gitVersion"]
    status = cluster_helm.run("status", "demo", *namespaced, "-o", "yaml").stdout
    assert yaml.safe_load(status)["info"]["status"] == "deployed"

    uninstalled = cluster_helm.run("uninstall", "demo", *namespaced, "--wait")
    assert 'release "demo" uninstalled' in uninstalled.stdout
    wait_until(
        "the release's ConfigMap to be deleted",
        lambda: (
            cluster.kubectl("get", "configmap", "demo-settings", "-n", namespace, check=False).returncode != 0
        ),
        timeout=60,
    )
    listed = cluster_helm.run("list", "--all", *namespaced, "-q").stdout
    assert listed.strip() == ""
