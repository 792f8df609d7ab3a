"""spec.model.optimize on format tensorflow: a Keras 3 file and a SavedModel signature converted by
tf2onnx through the optimize step, checked by the gate, and served through ONNX Runtime with the
original's signature and TensorFlow's predictions; int8 on a Keras MLP; string tensors not converted."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import modelplane_contract as contract
import numpy as np
import pytest
from modelplane_runtime.formats import LoadOptions, Trust, load_model
from modelplane_runtime.formats.optimized import read_record, served_model
from modelplane_runtime.optimize import convert
from modelplane_runtime.optimize.cache import DirCache
from modelplane_runtime.optimize.step import OptimizeSettings, main, optimize

from tests.runtime.asgi import call_json
from tests.runtime.models import iris
from tests.runtime.test_formats import serve_in_process
from tests.runtime.test_optimize import served_form

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf: Any = pytest.importorskip("tensorflow")  # in the test venv (RUNTIME_EXTRAS): never skipped there
keras: Any = pytest.importorskip("keras")
tf2onnx: Any = pytest.importorskip("tf2onnx")  # the tensorflow extra's converter

# Keras 3.15 on TensorFlow 2.21 converts variables with numpy 2's deprecated __array__ call (theirs).
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
ONNX = OptimizeSettings(onnx=True)
INT8 = OptimizeSettings(onnx=True, quantize="int8")
DIGEST = "sha256:" + "e" * 64
FEATURES = iris()[0].astype(np.float32)


def _pulled(model_dir: Path, artifact: Path, sample: dict[str, np.ndarray[Any, Any]] | None = None) -> Path:
    """``model_dir`` as `pull` leaves it: a pull record (and the sample request, when given)."""
    size = (
        sum(path.stat().st_size for path in artifact.rglob("*"))
        if artifact.is_dir()
        else artifact.stat().st_size
    )
    record = {"uri": f"file://{artifact}", "digest": DIGEST, "bytes": size}
    (model_dir / contract.PULL_RECORD_FILE).write_text(json.dumps(record))
    if sample is not None:
        inputs = [
            {"name": name, "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}
            for name, rows in sample.items()
        ]
        (model_dir / contract.WARMUP_REQUEST_FILE).write_text(json.dumps({"inputs": inputs}))
    return model_dir


def _keras_mlp() -> Any:
    """Iris through two hidden Dense layers of 64 (MatMul in its graph: int8 applies), seeded."""
    keras.utils.set_random_seed(7)
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(64, activation="relu")(inputs)
    hidden = keras.layers.Dense(64, activation="relu")(hidden)
    outputs = keras.layers.Dense(3, activation="softmax", name="probabilities")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(FEATURES, iris()[1], epochs=20, verbose=0)
    return model


@pytest.fixture(scope="module")
def keras_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    model_dir = tmp_path_factory.mktemp("keras")
    model = _keras_mlp()
    model.save(model_dir / "model.keras")
    return _pulled(model_dir, model_dir / "model.keras", {"features": FEATURES[::10]}), model


class Scorer(tf.Module):  # type: ignore[misc]  # tf is Any
    """Two named float inputs, a score and a class out; served through the signature "predict"."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(5)
        self.weights = tf.Variable(rng.standard_normal((3, 4)).astype(np.float32))
        self.bias = tf.Variable(rng.standard_normal((4,)).astype(np.float32))

    @tf.function(  # type: ignore[untyped-decorator]
        input_signature=[
            tf.TensorSpec([None, 3], tf.float32, name="measures"),
            tf.TensorSpec([None, 1], tf.float32, name="offset"),
        ]
    )
    def predict(self, measures: Any, offset: Any) -> dict[str, Any]:
        score = tf.nn.tanh(tf.matmul(measures, self.weights) + self.bias) + offset
        return {"score": score, "label": tf.argmax(score, axis=1)}

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="measures")])  # type: ignore[untyped-decorator]
    def total(self, measures: Any) -> dict[str, Any]:
        return {"total": tf.reduce_sum(measures, axis=1)}


@pytest.fixture(scope="module")
def saved_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = tmp_path_factory.mktemp("saved")
    module = Scorer()
    export = model_dir / "export"
    tf.saved_model.save(
        module, str(export), signatures={"serving_default": module.total, "predict": module.predict}
    )
    return _pulled(model_dir, export)


def _options(model_dir: Path, signature: str | None = None) -> LoadOptions:
    return LoadOptions(model_dir=model_dir, name="m", trust=Trust(None, None, False), signature=signature)


def test_a_keras_file_converts_passes_the_gate_and_answers_like_tensorflow(
    keras_dir: tuple[Path, Any], tmp_path: Path
) -> None:
    model_dir, model = keras_dir
    outcome = optimize(model_dir, "tensorflow", ONNX, DirCache(tmp_path))
    assert outcome.reason == contract.REASON_OPTIMIZED, outcome.message
    assert outcome.applied == ["onnx"]
    assert f"converter: tf2onnx {tf2onnx.__version__}" in outcome.notes
    assert outcome.gate is not None
    assert outcome.gate["passed"] is True
    assert outcome.gate["sample"] == contract.WARMUP_REQUEST_FILE
    assert "agreement" not in outcome.gate  # probabilities only: compared by error
    print("keras onnx", outcome.gate, outcome.original, outcome.optimized)  # noqa: T201 - the measured figures, in the test's report
    record = read_record(model_dir)
    assert record is not None
    assert record["serve"] is True
    assert [(item["served"], item["graph"]) for item in record["outputs"]] == [
        ("probabilities", "probabilities")
    ]
    served, original = served_form(_options(model_dir), "tensorflow")
    assert [spec.as_dict() for spec in served.outputs] == [spec.as_dict() for spec in original.outputs]
    got = served.predict({"features": FEATURES}, ["probabilities"])["probabilities"]
    want = model.predict(FEATURES, verbose=0)
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=contract.GATE_MAX_REL_ERROR, atol=1e-6)
    assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))


def test_int8_applies_to_a_keras_mlp_through_the_steps_command(
    keras_dir: tuple[Path, Any], tmp_path: Path
) -> None:
    model_dir, model = keras_dir
    onnx_form = convert.to_onnx(load_model("tensorflow", _options(model_dir)))
    assert convert.quantizable(onnx_form.graph)  # Dense layers are MatMul
    assert [(output.served, output.kind) for output in onnx_form.outputs] == [
        ("probabilities", convert.VALUES)
    ]
    log = tmp_path / "termination-log"
    log.touch()
    argv = [
        "--model-dir",
        str(model_dir),
        "--format",
        "tensorflow",
        "--settings",
        json.dumps({"onnx": True, "quantize": "int8"}),
    ]
    assert main([*argv, "--termination-log", str(log)]) == contract.EXIT_OK
    reason, _, body = log.read_text().strip().partition(": ")
    assert reason == contract.REASON_OPTIMIZED, body
    status = json.loads(body)
    assert status["applied"] == ["onnx", "int8"]
    assert status["optimized"]["bytes"] < len(onnx_form.graph)
    print("keras int8", status["gate"], status["optimized"]["bytes"], len(onnx_form.graph))  # noqa: T201 - the figures
    _, app = serve_in_process(model_dir, "tensorflow")
    _, meta = call_json(app, "GET", "/v2/models/m")
    assert meta["parameters"]["engine"].startswith("onnxruntime")
    assert meta["parameters"]["originalDigest"] == DIGEST
    payload = {
        "inputs": [
            {
                "name": "features",
                "datatype": "FP32",
                "shape": list(FEATURES.shape),
                "data": FEATURES.ravel().tolist(),
            }
        ]
    }
    code, answer = call_json(app, "POST", "/v2/models/m/infer", payload)
    assert code == 200, answer
    [output] = answer["outputs"]
    got = np.asarray(output["data"]).reshape(output["shape"])
    want = model.predict(FEATURES, verbose=0)
    assert np.abs(got - want).max() <= contract.GATE_MAX_ABS_ERROR
    assert np.mean(got.argmax(axis=1) == want.argmax(axis=1)) >= contract.GATE_MIN_AGREEMENT


def test_a_saved_model_signature_of_two_named_inputs_converts(saved_model_dir: Path) -> None:
    outcome = optimize(saved_model_dir, "tensorflow", ONNX, None, signature="predict")
    assert outcome.reason == contract.REASON_OPTIMIZED, outcome.message
    assert outcome.applied == ["onnx"]
    assert outcome.gate is not None
    assert outcome.gate["sample"] == "signature"
    assert outcome.gate["agreement"] == 1.0  # the class, by agreement
    assert outcome.gate["maxAbsErrorMeasured"] < 1e-5  # the score, by error
    print("saved model onnx", outcome.gate, outcome.original, outcome.optimized)  # noqa: T201 - the measured figures, in the test's report
    served, app = serve_in_process(saved_model_dir, "tensorflow", signature="predict")
    assert served.engine is not None
    assert served.engine.startswith("onnxruntime")
    _, meta = call_json(app, "GET", "/v2/models/m")
    assert meta["inputs"] == [
        {"name": "measures", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "offset", "datatype": "FP32", "shape": [-1, 1]},
    ]
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {"label": "INT64", "score": "FP32"}
    rng = np.random.default_rng(9)
    measures = rng.standard_normal((64, 3)).astype(np.float32)
    offset = rng.standard_normal((64, 1)).astype(np.float32)
    payload = {
        "inputs": [
            {"name": "offset", "datatype": "FP32", "shape": [64, 1], "data": offset.ravel().tolist()},
            {"name": "measures", "datatype": "FP32", "shape": [64, 3], "data": measures.ravel().tolist()},
        ]
    }
    code, answer = call_json(app, "POST", "/v2/models/m/infer", payload)
    assert code == 200, answer
    got = {
        output["name"]: np.asarray(output["data"]).reshape(output["shape"]) for output in answer["outputs"]
    }
    want = tf.saved_model.load(str(saved_model_dir / "export")).signatures["predict"](
        measures=tf.constant(measures), offset=tf.constant(offset)
    )
    np.testing.assert_allclose(got["score"], want["score"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["label"], want["label"].numpy())


def test_the_signature_served_is_the_one_converted(saved_model_dir: Path) -> None:
    by_default = convert.to_onnx(load_model("tensorflow", _options(saved_model_dir)))
    predict = convert.to_onnx(load_model("tensorflow", _options(saved_model_dir, "predict")))
    assert [output.served for output in by_default.outputs] == ["total"]
    assert [(o.served, o.graph, o.kind) for o in predict.outputs] == [
        ("label", "label", convert.LABEL),
        ("score", "score", convert.VALUES),
    ]
    settings = OptimizeSettings(onnx=True)
    assert settings.key(DIGEST) != settings.key(DIGEST, "predict")


def test_a_keras_export_converts_through_serving_default(keras_dir: tuple[Path, Any], tmp_path: Path) -> None:
    _, model = keras_dir
    model.export(str(tmp_path / "export"), verbose=False)  # a SavedModel: serving_default, output_0
    model_dir = _pulled(tmp_path, tmp_path / "export")
    outcome = optimize(model_dir, "tensorflow", ONNX, None)
    assert outcome.reason == contract.REASON_OPTIMIZED, outcome.message
    record = read_record(model_dir)
    assert record is not None
    [output] = record["outputs"]
    assert output["served"] == output["graph"]
    served = served_model(_options(model_dir), record)
    assert served is not None
    got = served.predict({"features": FEATURES}, [output["served"]])[output["served"]]
    np.testing.assert_allclose(got, model.predict(FEATURES, verbose=0), rtol=1e-5, atol=1e-6)


class Text(tf.Module):  # type: ignore[misc]  # tf is Any
    """A string in: TensorFlow's string ops have no ONNX form here."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])  # type: ignore[untyped-decorator]
    def length(self, text: Any) -> dict[str, Any]:
        return {"length": tf.strings.length(text)}


class Labeller(tf.Module):  # type: ignore[misc]  # tf is Any
    """Numbers in, a string out."""

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])  # type: ignore[untyped-decorator]
    def name(self, x: Any) -> dict[str, Any]:
        return {"name": tf.where(tf.reduce_sum(x, axis=1) > 0, "up", "down")}


def _save_text(directory: Path) -> None:
    module = Text()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.length})


def _save_labeller(directory: Path) -> None:
    module = Labeller()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.name})


@pytest.mark.parametrize(
    ("save", "converter_says", "step_says"),
    [
        # A string input cannot be sampled either: the gate says so first.
        (_save_text, "string tensors: text (BYTES)", "input text is BYTES [-1]"),
        (_save_labeller, "string tensors: name (BYTES)", "string tensors: name (BYTES)"),
    ],
)
def test_string_tensors_are_not_converted_and_the_original_is_served(
    save: Any, converter_says: str, step_says: str, tmp_path: Path
) -> None:
    save(tmp_path / "export")
    model_dir = _pulled(tmp_path, tmp_path / "export")
    with pytest.raises(convert.ConversionError) as raised:
        convert.to_onnx(load_model("tensorflow", _options(model_dir)))
    assert converter_says in str(raised.value)
    outcome = optimize(model_dir, "tensorflow", ONNX, None)
    assert outcome.reason == contract.REASON_OPTIMIZATION_FAILED
    assert step_says in outcome.message, outcome.message
    assert outcome.message.endswith(": serving the original")
    record = read_record(model_dir)
    assert record is not None
    assert record["serve"] is False
    served, _ = serve_in_process(model_dir, "tensorflow")
    assert served.engine == "SavedModel signature serving_default"  # TensorFlow itself
