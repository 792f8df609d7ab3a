"""helm, built from its Go module by `make helm`: version stamps, templating offline, and a real
install/uninstall of a trivial chart into the local cluster."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.cluster import REPO_ROOT, Cluster, make_print, wait_until

pytestmark = pytest.mark.e2e

CHART = REPO_ROOT / "tests" / "harness" / "data" / "trivial-chart"


def run_helm(helm: Path, home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # helm's cache/config/data stay in the test's own directory, never the user's.
    env = {
        "PATH": "/usr/bin:/bin",
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, env=env, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def test_helm_version_is_the_built_one(helm_bin: Path, tmp_path: Path) -> None:
    expected = make_print("helm-version")
    assert expected.startswith("v3.")
    assert run_helm(helm_bin, tmp_path, "version", "--template", "{{.Version}}").stdout == expected
    assert run_helm(helm_bin, tmp_path, "version", "--template", "{{.GitTreeState}}").stdout == "clean"


def test_helm_template_assumes_the_cluster_kubernetes_version(
    helm_bin: Path, bin_dir: Path, tmp_path: Path
) -> None:
    """Offline, helm falls back to its built-in Kubernetes version: the cluster's, not helm's default 1.20
    (the chart's kubeVersion constraint would refuse 1.20)."""
    kubectl = subprocess.run(
        [str(bin_dir / "kubectl"), "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    client = json.loads(kubectl.stdout)["clientVersion"]
    out = run_helm(helm_bin, tmp_path, "template", "demo", str(CHART)).stdout
    configmap = yaml.safe_load(out)
    assert configmap["data"]["kubeVersion"] == f"v{client['major']}.{client['minor']}.0"
    linted = run_helm(helm_bin, tmp_path, "lint", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in linted.stdout


def test_helm_install_and_uninstall(helm_bin: Path, cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    kube = ["--kubeconfig", str(cluster.kubeconfig), "--namespace", namespace]
    run_helm(helm_bin, tmp_path, "install", "demo", str(CHART), *kube, "--set", "greeting=hi", "--wait")

    configmap = cluster.get("configmap", "demo-settings", namespace=namespace)
    assert configmap["data"]["greeting"] == "hi"
    server_version = cluster.kubectl("version", "-o", "yaml").stdout
    assert configmap["data"]["kubeVersion"] == yaml.safe_load(server_version)["serverVersion"]["gitVersion"]
    status = run_helm(helm_bin, tmp_path, "status", "demo", *kube, "-o", "yaml").stdout
    assert yaml.safe_load(status)["info"]["status"] == "deployed"

    uninstalled = run_helm(helm_bin, tmp_path, "uninstall", "demo", *kube, "--wait")
    assert 'release "demo" uninstalled' in uninstalled.stdout
    wait_until(
        "the release's ConfigMap to be deleted",
        lambda: (
            cluster.kubectl("get", "configmap", "demo-settings", "-n", namespace, check=False).returncode != 0
        ),
        timeout=60,
    )
    listed = run_helm(helm_bin, tmp_path, "list", "--all", *kube, "-q").stdout
    assert listed.strip() == ""
