"""The tools `make` builds into the bin dir (helm, promtool, Prometheus), brought up to date first, the
third-party CRDs and the cluster's add-ons, as fixtures (registered once, by tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.cluster import Cluster, make, make_print


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    return Path(make_print("bin-dir"))


@pytest.fixture(scope="session")
def prometheus_bin_dir(bin_dir: Path) -> Path:
    make("prometheus")
    return bin_dir


@pytest.fixture(scope="session")
def helm_bin(bin_dir: Path) -> Path:
    make("helm")
    return bin_dir / "helm"


@pytest.fixture(scope="session")
def crd_dir() -> Path:
    return Path(make_print("crd-dir"))


@pytest.fixture(scope="session")
def third_party_crds(cluster: Cluster, crd_dir: Path) -> set[str]:
    """Installs every CRD of the crd dir (KEDA's, the Prometheus Operator's), which a fresh cluster lacks;
    server-side, because KEDA's ScaledJob is too big for client-side apply. Their names."""
    names = {yaml.safe_load(path.read_text())["metadata"]["name"] for path in sorted(crd_dir.glob("*.yaml"))}
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd_dir))
    for name in sorted(names):
        cluster.wait(f"crd/{name}", "condition=Established", timeout=60)
    return names


@pytest.fixture(scope="session")
def addons(cluster: Cluster) -> Cluster:
    """The cluster with metrics-server and the default StorageClass running (`make addons`)."""
    make("addons")
    return cluster
