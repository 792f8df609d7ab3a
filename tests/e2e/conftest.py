"""Fixtures of the operator's end-to-end tests: the host operator. The models they serve, the examples
and the waits on a ModelDeployment live in tests/support/ (models, examples, modeldeployments), shared
with the chart's example tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.harness.conftest import crd_dir, third_party_crds
from tests.support.cluster import Cluster, make, make_print

OPERATOR_USER = "system:serviceaccount:modelplane-system:modelplane-operator"
T = TypeVar("T")

__all__ = ["OPERATOR_USER", "crd_dir", "eventually", "make", "operator", "third_party_crds"]


@pytest.fixture
def operator(cluster: Cluster) -> Path:
    """The host operator (make operator-up is idempotent: a test elsewhere may have stopped it)."""
    make("operator-up")
    return Path(make_print("operator-log"))


def eventually(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 1.0) -> T:
    """Poll ``probe`` until it returns something other than None/False, within a deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last is not None and last is not False:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
