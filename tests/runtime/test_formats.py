"""Each format: a small real model made here, saved, loaded, served (REST v2 and v1 in-process),
and its predictions equal the library's own. Plus the trust rules for code in artifacts."""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import joblib
import modelplane_contract as contract
import numpy as np
import pytest
import skops.io
from modelplane_runtime.dataplane import DataPlane
from modelplane_runtime.datatypes import NUMPY_BY_DATATYPE
from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.formats import Model
from modelplane_runtime.rest import RestApp
from modelplane_runtime.server import ServeConfig, load
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from tests.runtime.asgi import call_json
from tests.runtime.models import iris

FEATURES, TARGET = iris()
ROWS = FEATURES[::15]  # ten rows across the three classes


def serve_in_process(model_dir: Path, model_format: str, **config: Any) -> tuple[Model, RestApp]:
    model = load(ServeConfig(model_dir=model_dir, format=model_format, name="m", **config))
    return model, RestApp(DataPlane("m", model))


def predict_v2(
    app: RestApp, rows: np.ndarray[Any, Any], datatype: str = "FP64", **extra: Any
) -> dict[str, Any]:
    payload = {
        "inputs": [
            {"name": "x", "shape": list(rows.shape), "datatype": datatype, "data": rows.ravel().tolist()}
        ],
        **extra,
    }
    status, body = call_json(app, "POST", "/v2/models/m/infer", payload)
    assert status == 200, body
    return {
        output["name"]: np.asarray(output["data"], dtype=NUMPY_BY_DATATYPE[output["datatype"]]).reshape(
            output["shape"]
        )
        for output in body["outputs"]
    }


def predict_v1(app: RestApp, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    status, body = call_json(app, "POST", "/v1/models/m:predict", {"instances": rows.tolist()})
    assert status == 200, body
    return np.asarray(body["predictions"])


def sha256_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def write_pull_record(model_dir: Path, digest: str) -> None:
    record = {"uri": f"file://{model_dir}", "digest": digest, "bytes": 1}
    (model_dir / contract.PULL_RECORD_FILE).write_text(json.dumps(record))


def test_sklearn_skops_logistic_regression(tmp_path: Path) -> None:
    estimator = LogisticRegression(max_iter=1000).fit(FEATURES, TARGET)
    skops.io.dump(estimator, tmp_path / "model.skops")
    model, app = serve_in_process(tmp_path, "sklearn")
    outputs = predict_v2(app, ROWS, outputs=[{"name": "predict"}, {"name": "predict_proba"}])
    assert outputs["predict"].tolist() == estimator.predict(ROWS).tolist()
    np.testing.assert_array_equal(outputs["predict_proba"], estimator.predict_proba(ROWS))
    assert predict_v1(app, ROWS).tolist() == estimator.predict(ROWS).tolist()
    assert model.metadata()["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]


def test_sklearn_random_forest_is_served_with_equal_predictions(tmp_path: Path) -> None:
    estimator = RandomForestClassifier(n_estimators=10, random_state=0).fit(FEATURES, TARGET)
    skops.io.dump(estimator, tmp_path / "forest.skops")
    model, app = serve_in_process(tmp_path, "sklearn")
    assert "treelite" in model.metadata()["parameters"]["engine"]
    outputs = predict_v2(app, ROWS, outputs=[{"name": "predict"}, {"name": "predict_proba"}])
    assert outputs["predict"].tolist() == estimator.predict(ROWS).tolist()
    np.testing.assert_array_equal(outputs["predict_proba"], estimator.predict_proba(ROWS))


@pytest.mark.parametrize("suffix", [".joblib", ".pkl"])
def test_pickled_models_need_a_pinned_digest_or_the_allow_flag(tmp_path: Path, suffix: str) -> None:
    estimator = LogisticRegression(max_iter=1000).fit(FEATURES, TARGET)
    path = tmp_path / f"model{suffix}"
    if suffix == ".joblib":
        joblib.dump(estimator, path)
    else:
        path.write_bytes(pickle.dumps(estimator))
    with pytest.raises(ModelLoadError) as refused:
        serve_in_process(tmp_path, "sklearn")
    assert "runs code when loaded" in str(refused.value)
    assert contract.ENV_MODEL_DIGEST in str(refused.value)
    assert contract.ENV_ALLOW_PICKLE in str(refused.value)

    _, allowed = serve_in_process(tmp_path, "sklearn", allow_pickle=True)
    assert predict_v2(allowed, ROWS)["predict"].tolist() == estimator.predict(ROWS).tolist()

    digest = sha256_digest(path)
    with pytest.raises(ModelLoadError, match="no pull record"):
        serve_in_process(tmp_path, "sklearn", digest=digest)
    write_pull_record(tmp_path, digest)
    pinned_model, pinned = serve_in_process(tmp_path, "sklearn", digest=digest)
    assert predict_v2(pinned, ROWS)["predict"].tolist() == estimator.predict(ROWS).tolist()
    assert pinned_model.metadata()["parameters"]["digest"] == digest
    with pytest.raises(ModelLoadError, match="differs from the digest of what was pulled"):
        serve_in_process(tmp_path, "sklearn", digest="sha256:" + "0" * 64)


def test_xgboost_json_and_ubj(tmp_path: Path) -> None:
    import xgboost

    booster = xgboost.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 3},
        xgboost.DMatrix(FEATURES, label=TARGET),
        num_boost_round=10,
    )
    expected = booster.predict(xgboost.DMatrix(ROWS))
    for suffix in ("json", "ubj"):
        model_dir = tmp_path / suffix
        model_dir.mkdir()
        booster.save_model(str(model_dir / f"model.{suffix}"))
        _, app = serve_in_process(model_dir, "xgboost")
        np.testing.assert_array_equal(predict_v2(app, ROWS, datatype="FP32")["predict"], expected)
        np.testing.assert_allclose(predict_v1(app, ROWS), expected, rtol=1e-6)


def test_lightgbm_text(tmp_path: Path) -> None:
    import lightgbm

    booster = lightgbm.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1, "min_data_in_leaf": 5},
        lightgbm.Dataset(FEATURES, label=TARGET),
        num_boost_round=10,
    )
    booster.save_model(str(tmp_path / "model.txt"))
    _, app = serve_in_process(tmp_path, "lightgbm")
    np.testing.assert_array_equal(predict_v2(app, ROWS)["predict"], booster.predict(ROWS))


def test_onnx_from_skl2onnx(tmp_path: Path) -> None:
    import onnxruntime
    from skl2onnx import to_onnx

    estimator = LogisticRegression(max_iter=1000).fit(FEATURES, TARGET)
    onnx_model = to_onnx(estimator, FEATURES[:1].astype(np.float32), options={"zipmap": False})
    (tmp_path / "model.onnx").write_bytes(onnx_model.SerializeToString())
    model, app = serve_in_process(tmp_path, "onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(None, {session.get_inputs()[0].name: ROWS.astype(np.float32)})
    outputs = predict_v2(app, ROWS.astype(np.float32), datatype="FP32")
    assert outputs["label"].tolist() == label.tolist()
    np.testing.assert_array_equal(outputs["probabilities"].astype(np.float32), probabilities)
    assert [spec["name"] for spec in model.metadata()["outputs"]] == ["label", "probabilities"]


def test_custom_class_installed_in_the_image(tmp_path: Path) -> None:
    (tmp_path / "seconds").write_text("0")
    model, app = serve_in_process(tmp_path, "custom", custom_class="tests.runtime.models:SlowModel")
    rows = np.array([[1.0, 2.0], [3.0, 4.5]])
    assert predict_v2(app, rows)["sum"].tolist() == [3.0, 7.5]
    assert model.metadata()["outputs"] == [{"name": "sum", "datatype": "FP64", "shape": [-1]}]


CUSTOM_MODEL_PY = """
import numpy as np

class Doubler:
    inputs = [{"name": "x", "datatype": "FP64", "shape": [-1, 3]}]

    def __init__(self, model_dir):
        with open(model_dir + "/factor.txt") as file:
            self.factor = float(file.read())

    def predict(self, inputs):
        return inputs["x"] * self.factor
"""


def test_custom_class_shipped_in_the_artifact_needs_a_pinned_digest(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(CUSTOM_MODEL_PY)
    (tmp_path / "factor.txt").write_text("2.5")
    with pytest.raises(ModelLoadError, match="runs code when loaded"):
        serve_in_process(tmp_path, "custom", custom_class="model:Doubler")
    digest = "sha256:" + hashlib.sha256(b"the artifact manifest").hexdigest()
    write_pull_record(tmp_path, digest)
    _, app = serve_in_process(tmp_path, "custom", custom_class="model:Doubler", digest=digest)
    assert predict_v2(app, np.array([[1.0, 2.0, 4.0]]))["predict"].tolist() == [[2.5, 5.0, 10.0]]


def test_load_errors_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no scikit-learn model file .* ending in \.skops"):
        serve_in_process(tmp_path, "sklearn")
    for name in ("a.skops", "b.skops"):
        skops.io.dump(LogisticRegression(max_iter=1000).fit(FEATURES, TARGET), tmp_path / name)
    with pytest.raises(ModelLoadError, match=r"more than one scikit-learn model file .*a\.skops, b\.skops"):
        serve_in_process(tmp_path, "sklearn")
    with pytest.raises(ModelLoadError, match="unknown model format 'keras'"):
        serve_in_process(tmp_path, "keras")
    with pytest.raises(ModelLoadError, match="needs the class to serve"):
        serve_in_process(tmp_path, "custom")


def test_a_sample_request_beside_the_model_is_the_warm_up(tmp_path: Path) -> None:
    skops.io.dump(LogisticRegression(max_iter=1000).fit(FEATURES, TARGET), tmp_path / "model.skops")
    sample = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}
    (tmp_path / contract.WARMUP_REQUEST_FILE).write_text(json.dumps(sample))
    with pytest.raises(ModelLoadError, match=r"warm-up request .* does not fit the model"):
        serve_in_process(tmp_path, "sklearn")


@pytest.mark.heavy
def test_pytorch_torchscript(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1))
    with warnings.catch_warnings():
        # torch 2.9+ deprecates TorchScript in favour of torch.export; the format serves what users have.
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(module), str(tmp_path / "model.pt"))
    sample = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    (tmp_path / contract.WARMUP_REQUEST_FILE).write_text(json.dumps(sample))
    _, app = serve_in_process(tmp_path, "pytorch")
    rows = ROWS.astype(np.float32)
    with torch.inference_mode():
        expected = module(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(predict_v2(app, rows, datatype="FP32")["predict"], expected, rtol=1e-6)


@pytest.mark.heavy
def test_huggingface_pipeline_from_a_local_directory(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    # A tiny randomly initialised model and a word-level tokenizer, made here (no hub).
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "[PAD]": 1, "good": 2, "bad": 3, "movie": 4}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]"
    )
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
    )
    model = transformers.BertForSequenceClassification(config)
    model.save_pretrained(tmp_path)
    fast.save_pretrained(tmp_path)
    _, app = serve_in_process(tmp_path, "huggingface")
    expected = transformers.pipeline("text-classification", model=str(tmp_path), device="cpu")(["good movie"])
    status, body = call_json(
        app,
        "POST",
        "/v2/models/m/infer",
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["good movie"]}]},
    )
    assert status == 200, body
    assert json.loads(body["outputs"][0]["data"][0]) == pytest.approx(expected[0])
