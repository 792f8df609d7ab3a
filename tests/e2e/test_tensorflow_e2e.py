"""Format tensorflow on the local cluster: a Keras 3 file and a SavedModel (a .tar.gz of its
directory) made here, pulled from S3 with their digests, served by the runtime image's tensorflow
variant; predictions through the Service equal TensorFlow's own, and v2 metadata shows the signature."""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from tests.support.cluster import Cluster
from tests.support.examples import credentials_secret
from tests.support.modeldeployments import (
    request_json,
    s3_model_deployment,
    service_url,
    wait_ready,
    wait_service,
)
from tests.support.models import IRIS_SAMPLE, S3Model, keras_iris
from tests.support.s3 import S3Server

pytestmark = [
    pytest.mark.e2e,
    # Keras 3.15 on TensorFlow 2.21 converts variables with numpy 2's deprecated __array__ call (theirs).
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass(frozen=True)
class TensorFlowModel(S3Model):
    expected_probabilities: list[list[float]]
    format: ClassVar[str] = "tensorflow"


def _upload(s3: S3Server, key: str, data: bytes) -> str:
    digest = s3.upload(key, data)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    return digest


@pytest.fixture(scope="module")
def tf_models(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, TensorFlowModel]:
    tf: Any = importlib.import_module("tensorflow")

    work = tmp_path_factory.mktemp("tensorflow")
    model = keras_iris()
    rows = np.array(IRIS_SAMPLE, dtype=np.float32)
    probabilities = model.predict(rows, verbose=0).tolist()
    model.save(work / "iris.keras")

    class Iris(tf.Module):  # type: ignore[misc]  # tf is untyped
        """Two signatures: the probabilities (serving_default) and the class, chosen by name in the spec."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])  # type: ignore[untyped-decorator]
        def probabilities(self, features: Any) -> dict[str, Any]:
            return {"probabilities": self.model(features)}

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])  # type: ignore[untyped-decorator]
        def classes(self, features: Any) -> dict[str, Any]:
            return {"class": tf.argmax(self.model(features), axis=1)}

    module = Iris()
    tf.saved_model.save(
        module,
        str(work / "saved"),
        signatures={"serving_default": module.probabilities, "classes": module.classes},
    )
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(work / "saved", arcname="iris")
    keras_key, saved_key = "tensorflow/iris.keras", "tensorflow/iris-savedmodel.tar.gz"
    return {
        "keras": TensorFlowModel(
            s3.bucket,
            keras_key,
            _upload(s3, keras_key, (work / "iris.keras").read_bytes()),
            IRIS_SAMPLE,
            probabilities,
        ),
        "saved": TensorFlowModel(
            s3.bucket, saved_key, _upload(s3, saved_key, archive.getvalue()), IRIS_SAMPLE, probabilities
        ),
    }


def _infer(cluster: Cluster, namespace: str, name: str, rows: list[list[float]]) -> dict[str, Any]:
    body = {
        "inputs": [
            {"name": "features", "shape": [len(rows), 4], "datatype": "FP32", "data": np.ravel(rows).tolist()}
        ]
    }
    answer: dict[str, Any] = request_json(
        f"{service_url(cluster, namespace, name)}/v2/models/{name}/infer", body
    )
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer["outputs"]}


def test_keras_and_saved_model_served_from_s3_answer_as_tensorflow_does(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server, tf_models: dict[str, TensorFlowModel]
) -> None:
    keras_md = s3_model_deployment("keras-iris", tf_models["keras"])
    saved_md = s3_model_deployment("saved-iris", tf_models["saved"])
    saved_md["spec"]["model"]["signature"] = "classes"
    cluster.apply([credentials_secret(s3), keras_md, saved_md], namespace)
    for name in ("keras-iris", "saved-iris"):
        obj = wait_ready(cluster, namespace, name, timeout=300)
        assert obj["status"]["servedDigest"] == tf_models["keras" if name == "keras-iris" else "saved"].digest
        wait_service(cluster, namespace, name)

    base = service_url(cluster, namespace, "keras-iris")
    meta = request_json(f"{base}/v2/models/keras-iris")
    assert meta["platform"] == "tensorflow"
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]
    got = _infer(cluster, namespace, "keras-iris", IRIS_SAMPLE)["probabilities"]
    np.testing.assert_allclose(got, tf_models["keras"].expected_probabilities, rtol=1e-5, atol=1e-6)
    v1 = request_json(f"{base}/v1/models/keras-iris:predict", {"instances": IRIS_SAMPLE})["predictions"]
    np.testing.assert_allclose(v1, tf_models["keras"].expected_probabilities, rtol=1e-5, atol=1e-6)

    meta = request_json(f"{service_url(cluster, namespace, 'saved-iris')}/v2/models/saved-iris")
    assert meta["parameters"]["engine"] == "SavedModel signature classes"
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "class", "datatype": "INT64", "shape": [-1]}]
    classes = _infer(cluster, namespace, "saved-iris", IRIS_SAMPLE)["class"]
    assert classes.tolist() == np.argmax(tf_models["saved"].expected_probabilities, axis=1).tolist()
