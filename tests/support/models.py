"""Real models for the end-to-end tests, put where examples/*.yaml name them: iris classifiers and an
ONNX one in the S3 server `make s3` runs, an XGBoost one on a plain HTTP server on the node IP.
The fixtures are registered once, in tests/conftest.py, so every area shares one instance of each."""

from __future__ import annotations

import http.server
import importlib
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from tests.support.s3 import S3Server

NODE_IP = "172.28.0.1"  # the node's address on the host: pods reach the host's servers there
HTTP_MODELS_PORT = 8765  # examples/xgboost-http.yaml names it
# Rows of the iris data set (one per class and a borderline one), as every example is asked.
IRIS_SAMPLE = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.0, 2.2, 5.0, 1.5]]


def _plain(values: Any) -> list[Any]:
    return [v.item() if hasattr(v, "item") else v for v in values]


@dataclass(frozen=True)
class S3Model:
    """A model's object in the S3 server's bucket, its digest, and the rows the tests ask it."""

    bucket: str
    key: str
    digest: str
    sample: list[list[float]]
    format: ClassVar[str]

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class SklearnModel(S3Model):
    estimator: Any
    format: ClassVar[str] = "sklearn"

    def expected(self) -> list[Any]:
        return _plain(self.estimator.predict(np.array(self.sample)))


@dataclass(frozen=True)
class XGBoostModel:
    path: str  # under the HTTP server's root
    booster: Any
    sample: list[list[float]]

    def expected(self) -> np.ndarray[Any, Any]:
        """The runtime serves the saved Booster: class probabilities, as the classifier's predict_proba."""
        result: np.ndarray[Any, Any] = self.booster.predict_proba(np.array(self.sample))
        return result


@dataclass(frozen=True)
class OnnxModel(S3Model):
    data: bytes
    format: ClassVar[str] = "onnx"

    def expected(self) -> list[Any]:
        """The model's own answer (onnxruntime on the host): its first output, the labels."""
        import onnxruntime

        session = onnxruntime.InferenceSession(self.data, providers=["CPUExecutionProvider"])
        labels = session.run(None, {session.get_inputs()[0].name: np.array(self.sample, dtype=np.float32)})[0]
        return _plain(labels)


def _train_iris(c: float) -> tuple[bytes, Any]:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    estimator = LogisticRegression(C=c, max_iter=500).fit(features, labels)
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    return buffer.getvalue(), estimator


@pytest.fixture(scope="session")
def iris_models(s3: S3Server) -> dict[str, SklearnModel]:
    """Two versions of an iris classifier in S3, at the keys the examples name."""
    models = {}
    for version, key, c in (
        ("v1", "examples/iris/model.joblib", 1.0),
        ("v2", "examples/iris-v2/model.joblib", 0.05),
    ):
        data, estimator = _train_iris(c)
        models[version] = SklearnModel(s3.bucket, key, s3.upload(key, data), IRIS_SAMPLE, estimator)
    return models


@pytest.fixture(scope="session")
def onnx_model(s3: S3Server) -> OnnxModel:
    """An iris classifier converted to ONNX (skl2onnx, no ZipMap so every output is a tensor), in S3
    at the key examples/gpu.yaml names; examples/onnx-pvc.yaml's test copies it onto its claim."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    estimator = LogisticRegression(max_iter=1000).fit(features, labels)
    onnx = to_onnx(estimator, features[:1].astype(np.float32), options={"zipmap": False})
    data = onnx.SerializeToString()
    key = "examples/onnx/model.onnx"
    return OnnxModel(s3.bucket, key, s3.upload(key, data), IRIS_SAMPLE, data)


@pytest.fixture(scope="session")
def http_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A plain HTTP server on the node IP (pods reach it there) serving a directory of models."""
    root = tmp_path_factory.mktemp("http-models")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib signature
            pass

    server = http.server.ThreadingHTTPServer((NODE_IP, HTTP_MODELS_PORT), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def xgboost_model(http_models: Path) -> XGBoostModel:
    """An XGBoost iris classifier in its JSON format, served where examples/xgboost-http.yaml names it."""
    import xgboost
    from sklearn.datasets import load_iris

    features, labels = load_iris(return_X_y=True)
    booster = xgboost.XGBClassifier(n_estimators=8, max_depth=3).fit(features, labels)
    path = "xgboost/model.json"
    (http_models / path).parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(http_models / path))
    return XGBoostModel(path, booster, features[[0, 60, 120]].tolist())


def keras_iris() -> Any:
    """A small Keras 3 classifier fitted on iris (input "features", output "probabilities"), seeded.
    TensorFlow is imported here, on first use: most tests never need it."""
    keras: Any = importlib.import_module("keras")
    from sklearn.datasets import load_iris

    features, target = load_iris(return_X_y=True)
    keras.utils.set_random_seed(11)
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="probabilities")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(features.astype(np.float32), target, epochs=5, verbose=0)
    return model
