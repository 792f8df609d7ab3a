"""Format tensorflow: a Keras 3 file and SavedModels made here, served over v1, v2 REST and gRPC, with
predictions equal to TensorFlow's own; the SavedModel's signature chosen by name; strings as BYTES;
served from the loading process (TensorFlow's thread pools do not survive a fork)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.grpc.generated import inference_pb2 as pb
from modelplane_runtime.grpc.generated import inference_pb2_grpc as pb_grpc

from tests.runtime.asgi import call_json
from tests.runtime.models import iris
from tests.runtime.serving import serving
from tests.runtime.test_formats import predict_v2, serve_in_process
from tests.support.models import keras_iris

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf: Any = pytest.importorskip("tensorflow")  # in the test venv (RUNTIME_EXTRAS): never skipped there
keras: Any = pytest.importorskip("keras")

# Keras 3.15 on TensorFlow 2.21 converts variables with numpy 2's deprecated __array__ call (theirs).
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
FEATURES = iris()[0]
ROWS = FEATURES[::15].astype(np.float32)


class Text(tf.Module):  # type: ignore[misc]  # tf is Any
    """Strings in, strings and numbers out: the BYTES path both ways, two signatures."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])  # type: ignore[untyped-decorator]
    def shout(self, text: Any) -> dict[str, Any]:
        return {"upper": tf.strings.upper(text), "length": tf.strings.length(text)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])  # type: ignore[untyped-decorator]
    def length(self, text: Any) -> dict[str, Any]:
        return {"length": tf.strings.length(text)}


def save_text_model(directory: Path) -> None:
    module = Text()
    tf.saved_model.save(
        module, str(directory), signatures={"serving_default": module.length, "shout": module.shout}
    )


def test_a_keras_file_is_served_with_its_own_names_and_tensorflows_predictions(tmp_path: Path) -> None:
    model = keras_iris()
    model.save(tmp_path / "model.keras")
    served, app = serve_in_process(tmp_path, "tensorflow")
    assert not served.fork_safe
    status, meta = call_json(app, "GET", "/v2/models/m")
    assert status == 200
    assert meta["platform"] == "tensorflow"
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]
    expected = model.predict(ROWS, verbose=0)
    got = predict_v2(app, ROWS, datatype="FP32")["probabilities"]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    status, body = call_json(app, "POST", "/v1/models/m:predict", {"instances": ROWS.tolist()})
    assert status == 200, body
    np.testing.assert_allclose(np.asarray(body["predictions"]), expected, rtol=1e-6, atol=1e-7)


def test_a_saved_model_is_served_through_serving_default(tmp_path: Path) -> None:
    model = keras_iris()
    model.export(str(tmp_path / "export"), verbose=False)  # a SavedModel with serving_default
    served, app = serve_in_process(tmp_path, "tensorflow")
    assert served.engine == "SavedModel signature serving_default"
    _, meta = call_json(app, "GET", "/v2/models/m")
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    [output] = meta["outputs"]
    expected = model.predict(ROWS, verbose=0)
    np.testing.assert_allclose(predict_v2(app, ROWS, datatype="FP32")[output["name"]], expected, rtol=1e-6)


def test_strings_in_and_out_and_a_signature_chosen_by_name(tmp_path: Path) -> None:
    save_text_model(tmp_path / "text")
    _, default_app = serve_in_process(tmp_path, "tensorflow")
    _, meta = call_json(default_app, "GET", "/v2/models/m")
    assert meta["outputs"] == [{"name": "length", "datatype": "INT32", "shape": [-1]}]
    _, app = serve_in_process(tmp_path, "tensorflow", signature="shout")
    _, meta = call_json(app, "GET", "/v2/models/m")
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {"length": "INT32", "upper": "BYTES"}
    payload = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["déjà vu", "ok"]}]}
    status, body = call_json(app, "POST", "/v2/models/m/infer", payload)
    assert status == 200, body
    outputs = {o["name"]: o["data"] for o in body["outputs"]}
    expected = Text().shout(tf.constant(["déjà vu", "ok"]))
    assert outputs["upper"] == [s.decode() for s in expected["upper"].numpy()]
    assert outputs["length"] == expected["length"].numpy().tolist()


def test_a_missing_signature_or_library_file_says_what_to_fix(tmp_path: Path) -> None:
    save_text_model(tmp_path / "text")
    with pytest.raises(
        ModelLoadError, match=r"no signature 'predict' \(it has: length|serving_default, shout"
    ):
        serve_in_process(tmp_path, "tensorflow", signature="predict")
    with pytest.raises(ModelLoadError, match=r"no SavedModel \(saved_model.pb\) or Keras file"):
        serve_in_process(tmp_path / "text" / "variables", "tensorflow")


def test_the_server_serves_from_the_loading_process_over_every_protocol(tmp_path: Path) -> None:
    model = keras_iris()
    (tmp_path / "model").mkdir()
    (tmp_path / "logs").mkdir()
    model.save(tmp_path / "model" / "model.keras")
    with serving(
        tmp_path / "model", "tensorflow", tmp_path / "logs", name="iris", args=["--workers", "2"]
    ) as server:
        assert server.worker_pids() == [], "TensorFlow must not be forked into workers"
        assert "cannot be forked into workers: serving with one" in server.log()
        payload = {
            "inputs": [
                {
                    "name": "features",
                    "shape": list(ROWS.shape),
                    "datatype": "FP32",
                    "data": ROWS.ravel().tolist(),
                }
            ]
        }
        response = httpx.post(f"{server.url}/v2/models/iris/infer", json=payload, timeout=30)
        assert response.status_code == 200, response.text
        [output] = response.json()["outputs"]
        np.testing.assert_allclose(
            np.asarray(output["data"]).reshape(output["shape"]), model.predict(ROWS, verbose=0), rtol=1e-6
        )
        tensor = pb.ModelInferRequest.InferInputTensor(
            name="features", datatype="FP32", shape=list(ROWS.shape)
        )
        tensor.contents.fp32_contents.extend(ROWS.ravel().tolist())
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            answer = stub.ModelInfer(pb.ModelInferRequest(model_name="iris", inputs=[tensor]))
        [probabilities] = answer.outputs
        np.testing.assert_allclose(
            np.reshape(probabilities.contents.fp32_contents, list(probabilities.shape)),
            model.predict(ROWS, verbose=0),
            rtol=1e-6,
        )
