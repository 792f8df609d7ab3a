"""Fixtures of the harness tests: the tools `make` builds into the bin dir, brought up to date first."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cluster import Cluster, make, make_print
from tests.support.helm import cluster_helm, helm
from tests.support.images import echo_image

# `make` stays importable from here (tests/chart and tests/harness import it); the fixtures are
# registered for this area.
__all__ = ["cluster_helm", "echo_image", "helm", "make"]


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
def addons(cluster: Cluster) -> Cluster:
    """The cluster with metrics-server and the default StorageClass running (`make addons`)."""
    make("addons")
    return cluster
