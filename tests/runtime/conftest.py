"""Fixtures of the runtime's serve tests (pull tests keep theirs in pull/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression

from tests.runtime.models import save_iris_logistic_regression
from tests.runtime.serving import RunningServer, serving


@pytest.fixture(scope="session")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LogisticRegression]:
    model_dir = tmp_path_factory.mktemp("iris-lr")
    return model_dir, save_iris_logistic_regression(model_dir)


@pytest.fixture(scope="session")
def iris_server(
    iris_model: tuple[Path, LogisticRegression], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """LogisticRegression on iris, 2 workers, every protocol: shared by the protocol tests."""
    with serving(
        iris_model[0], "sklearn", tmp_path_factory.mktemp("logs"), name="iris", args=["--workers", "2"]
    ) as server:
        yield server
