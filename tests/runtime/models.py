"""Small real models the runtime's tests make, save and serve; and model classes they load."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def iris() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    features, target = load_iris(return_X_y=True)
    return np.asarray(features), np.asarray(target)


def save_iris_logistic_regression(model_dir: Path) -> LogisticRegression:
    import skops.io

    features, target = iris()
    model = LogisticRegression(max_iter=1000).fit(features, target)
    model_dir.mkdir(parents=True, exist_ok=True)
    skops.io.dump(model, model_dir / "model.skops")
    return model


def make_slow_model_dir(path: Path, seconds: float) -> Path:
    """An artifact for SlowModel (the custom format), each call taking ``seconds``."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "seconds").write_text(str(seconds))
    return path


class SlowModel:
    """Takes ``SLOW_MODEL_SECONDS`` per call: for overload, timeout and shutdown tests."""

    seconds = 0.2
    inputs: ClassVar = [{"name": "x", "datatype": "FP64", "shape": [-1, 2]}]
    outputs: ClassVar = [{"name": "sum", "datatype": "FP64", "shape": [-1]}]

    def __init__(self, model_dir: str) -> None:
        self.model_dir = model_dir
        marker = Path(model_dir) / "seconds"
        if marker.exists():
            self.seconds = float(marker.read_text())

    def load(self) -> None:
        """Sleeps for the seconds in ``load-seconds`` when the artifact has that file."""
        marker = Path(self.model_dir) / "load-seconds"
        if marker.exists():
            time.sleep(float(marker.read_text()))

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        if (Path(self.model_dir) / "broken").exists():
            raise RuntimeError("this model is broken")
        time.sleep(self.seconds)
        return {"sum": inputs["x"].sum(axis=1)}
