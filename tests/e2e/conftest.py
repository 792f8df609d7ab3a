"""Fixtures of the operator's end-to-end tests: the host operator. The models they serve, the examples
and the waits on a ModelDeployment live in tests/support/ (models, examples, modeldeployments), shared
with the chart's example tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cluster import Cluster, make, make_print

OPERATOR_USER = "system:serviceaccount:modelplane-system:modelplane-operator"


@pytest.fixture
def operator(cluster: Cluster) -> Path:
    """The host operator (make operator-up is idempotent: a test elsewhere may have stopped it)."""
    make("operator-up")
    return Path(make_print("operator-log"))


@pytest.fixture(scope="module")
def keda(cluster: Cluster) -> str:
    """KEDA and its Prometheus running (`make keda`, idempotent); that Prometheus' address."""
    make("keda")
    return make_print("keda-prometheus-url")
