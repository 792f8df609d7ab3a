"""Fixtures shared by every area, registered here once (`pytest_plugins`), so that every area shares one
session instance of each (one S3 server, one HTTP server on its port). Areas keep their own fixtures in
tests/<area>/conftest.py."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import REPO_ROOT, Cluster, make_print, namespace_name

# A module comes before the modules that import it (models imports s3): pytest rewrites the asserts of a
# plugin module only when it imports it first.
pytest_plugins = [
    "tests.support.s3",
    "tests.support.models",
    "tests.support.helm",
    "tests.support.images",
    "tests.support.tools",
    "tests.support.gateway",
]


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    """The local cluster, brought up (or reused when it already runs) by `make cluster-up`."""
    subprocess.run(["make", "-s", "--no-print-directory", "cluster-up"], cwd=REPO_ROOT, check=True)
    return Cluster(kubeconfig=Path(make_print("kubeconfig")), bin_dir=Path(make_print("bin-dir")))


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of the test's own, deleted (without waiting) when the test ends."""
    name = namespace_name(request.node.name)
    cluster.kubectl("create", "namespace", name)
    cluster.wait("serviceaccount/default", "create", namespace=name, timeout=60)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
