"""Fixtures of the chart tests: the harness's tools (helm, promtool, third-party CRDs) and a helm runner."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.conftest import bin_dir, crd_dir, helm_bin, make, prometheus_bin_dir
from tests.support.cluster import REPO_ROOT, Cluster, make_print

__all__ = ["bin_dir", "crd_dir", "helm_bin", "prometheus_bin_dir"]

CHART = REPO_ROOT / "charts" / "modelplane"


@dataclass(frozen=True)
class Helm:
    binary: Path
    home: Path
    kubeconfig: Path | None = None

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # helm's cache/config/data stay in the test's own directory, never the user's.
        env = {
            "PATH": "/usr/bin:/bin",
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        kube = ["--kubeconfig", str(self.kubeconfig)] if self.kubeconfig else []
        result = subprocess.run(
            [str(self.binary), *args, *kube], capture_output=True, text=True, env=env, timeout=300
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def template(self, values: dict[str, Any] | None = None, namespace: str = "modelplane-system") -> str:
        """The chart rendered offline with VALUES (a values file, so types stay exact), as YAML text."""
        values_file = self.home / "values.yaml"
        values_file.write_text(yaml.safe_dump(values or {}))
        return self.run("template", "mp", str(CHART), "-n", namespace, "-f", str(values_file)).stdout


def documents(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def image_values(name: str) -> dict[str, str]:
    """The chart's image.repository/tag of an image `make images` built into the node."""
    make("image", f"NAME={name}")
    repository, _, tag = make_print("image-ref", f"NAME={name}").rpartition(":")
    return {"repository": repository, "tag": tag}


@pytest.fixture
def helm(helm_bin: Path, tmp_path: Path) -> Helm:
    return Helm(helm_bin, tmp_path)


@pytest.fixture
def cluster_helm(helm_bin: Path, tmp_path: Path, cluster: Cluster) -> Helm:
    return Helm(helm_bin, tmp_path, cluster.kubeconfig)
