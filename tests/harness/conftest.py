"""Fixtures of the harness tests: the tools `make` builds into the bin dir, brought up to date first."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.cluster import REPO_ROOT, Cluster, make_print


def make(*targets: str) -> None:
    """Runs `make TARGETS` (each target is cached and idempotent), failing the test with its output."""
    result = subprocess.run(
        ["make", "--no-print-directory", *targets], cwd=REPO_ROOT, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise AssertionError(f"make {' '.join(targets)} failed:\n{result.stdout}\n{result.stderr}")


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


@pytest.fixture(scope="session")
def echo_image(cluster: Cluster) -> str:
    """The cluster tests' small HTTP server image (Debian base with python3 and sh), built into the node."""
    make("image", "NAME=http-echo")
    return make_print("image-ref", "NAME=http-echo")
