"""helm as the tests run it (the binary `make helm` builds, the `helm_bin` fixture of
tests/support/tools.py), and its fixtures (registered once, by tests/conftest.py)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cluster import REPO_ROOT, Cluster

CHART = REPO_ROOT / "charts" / "modelplane"


@dataclass(frozen=True)
class Helm:
    """helm with its cache, config and data in HOME (the test's own directory, never the user's); with a
    kubeconfig, every command talks to that cluster."""

    binary: Path
    home: Path
    kubeconfig: Path | None = None

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        kube = ["--kubeconfig", str(self.kubeconfig)] if self.kubeconfig else []
        result = subprocess.run(
            [str(self.binary), *args, *kube],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def template(
        self, values: dict[str, Any] | None = None, namespace: str = "modelplane-system", chart: Path = CHART
    ) -> str:
        """CHART rendered offline with VALUES (a values file, so types stay exact), as YAML text."""
        values_file = self.home / "values.yaml"
        values_file.write_text(yaml.safe_dump(values or {}))
        return self.run("template", "mp", str(chart), "-n", namespace, "-f", str(values_file)).stdout


@pytest.fixture
def helm(helm_bin: Path, tmp_path: Path) -> Helm:
    """helm for offline commands (template, lint, version)."""
    return Helm(helm_bin, tmp_path)


@pytest.fixture
def cluster_helm(helm_bin: Path, tmp_path: Path, cluster: Cluster) -> Helm:
    """helm against the local cluster."""
    return Helm(helm_bin, tmp_path, cluster.kubeconfig)
