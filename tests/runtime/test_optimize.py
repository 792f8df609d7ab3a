"""The optimize step: conversion, int8 applicability, the accuracy gate, the cache, and serving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import modelplane_contract as contract
import numpy as np
import pytest
from modelplane_runtime.datatypes import NUMPY_BY_DATATYPE
from modelplane_runtime.formats import LoadOptions, Model, Trust, load_model
from modelplane_runtime.formats.optimized import read_record, served_model
from modelplane_runtime.optimize import convert
from modelplane_runtime.optimize.cache import DirCache, cache_for
from modelplane_runtime.optimize.gate import GateSettings
from modelplane_runtime.optimize.step import (
    OptimizeSettings,
    Outcome,
    main,
    optimize,
    termination_line,
)
from modelplane_runtime.server import ServeConfig, load
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests.runtime.models import iris

ONNX = OptimizeSettings(onnx=True)
INT8 = OptimizeSettings(onnx=True, quantize="int8")


def _save(model_dir: Path, estimator: Any, sample_rows: np.ndarray[Any, Any] | None = None) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, model_dir / "model.joblib")
    size = (model_dir / "model.joblib").stat().st_size
    record = {"uri": f"file://{model_dir}/model.joblib", "digest": "sha256:" + "a" * 64, "bytes": size}
    (model_dir / contract.PULL_RECORD_FILE).write_text(json.dumps(record))
    if sample_rows is not None:
        request = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": list(sample_rows.shape),
                               "data": sample_rows.ravel().tolist()}]}  # fmt: skip
        (model_dir / contract.WARMUP_REQUEST_FILE).write_text(json.dumps(request))
    return model_dir


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    features, labels = iris()
    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features, labels)
    return _save(tmp_path_factory.mktemp("pipeline"), estimator, features[::10])


@pytest.fixture(scope="module")
def mlp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    features, labels = iris()
    mlp = MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=800, random_state=0)
    estimator = make_pipeline(StandardScaler(), mlp).fit(features, labels)
    return _save(tmp_path_factory.mktemp("mlp"), estimator, features[::10])


def _options(model_dir: Path) -> LoadOptions:
    return LoadOptions(model_dir=model_dir, name="m", trust=Trust(None, None, allow_pickle=True))


def test_pipeline_converts_and_passes_the_gate(pipeline_dir: Path, tmp_path: Path) -> None:
    outcome = optimize(pipeline_dir, "sklearn", ONNX, DirCache(tmp_path), allow_pickle=True)
    assert outcome.reason == contract.REASON_OPTIMIZED, outcome.message
    assert outcome.applied == ["onnx"]
    assert outcome.gate is not None
    assert outcome.gate["agreement"] == 1.0
    assert outcome.gate["sample"] == contract.WARMUP_REQUEST_FILE
    assert outcome.optimized is not None
    assert outcome.optimized["digest"].startswith("sha256:")
    for side in (outcome.original, outcome.optimized):
        assert side["p50Batch1Microseconds"] > 0
        assert side["p50Batch64Microseconds"] > 0
    assert outcome.original["bytes"] == (pipeline_dir / "model.joblib").stat().st_size


def served_form(options: LoadOptions, model_format: str) -> tuple[Model, Model]:
    """The optimized form `serve` loads from the record in ``options.model_dir``, and the original:
    the optimized one runs on onnxruntime and takes the original's inputs."""
    record = read_record(options.model_dir)
    assert record is not None
    served = served_model(options, record)
    original = load_model(model_format, options)
    assert served is not None
    assert served.engine is not None
    assert served.engine.startswith("onnxruntime")
    assert [spec.as_dict() for spec in served.inputs] == [spec.as_dict() for spec in original.inputs]
    return served, original


def test_served_form_answers_like_the_original(pipeline_dir: Path, tmp_path: Path) -> None:
    optimize(pipeline_dir, "sklearn", ONNX, DirCache(tmp_path), allow_pickle=True)
    served, original = served_form(_options(pipeline_dir), "sklearn")
    features = {"input-0": iris()[0]}
    got = served.predict(features, ["predict", "predict_proba"])
    want = original.predict(features, ["predict", "predict_proba"])
    assert got["predict"].dtype == want["predict"].dtype
    np.testing.assert_array_equal(got["predict"], want["predict"])
    np.testing.assert_allclose(got["predict_proba"], want["predict_proba"], atol=1e-5)
    meta = served.metadata()["parameters"]
    assert meta["digest"] != meta["originalDigest"] == "sha256:" + "a" * 64


def test_serve_loads_the_optimized_form(pipeline_dir: Path, tmp_path: Path) -> None:
    optimize(pipeline_dir, "sklearn", ONNX, DirCache(tmp_path), allow_pickle=True)
    model = load(ServeConfig(model_dir=pipeline_dir, format="sklearn", name="m", allow_pickle=True))
    assert model.engine is not None
    assert model.engine.startswith("onnxruntime")
    assert model.metadata()["platform"] == "sklearn"


def test_int8_applies_to_an_mlp(mlp_dir: Path, tmp_path: Path) -> None:
    outcome = optimize(mlp_dir, "sklearn", INT8, DirCache(tmp_path), allow_pickle=True)
    assert outcome.reason == contract.REASON_OPTIMIZED, outcome.message
    assert outcome.applied == ["onnx", "int8"]
    assert outcome.gate is not None
    assert outcome.gate["agreement"] >= contract.GATE_MIN_AGREEMENT
    assert outcome.optimized is not None
    onnx_only = optimize(mlp_dir, "sklearn", ONNX, None, allow_pickle=True)
    assert onnx_only.optimized is not None
    assert outcome.optimized["bytes"] < onnx_only.optimized["bytes"]


def test_int8_does_not_apply_without_matmul(pipeline_dir: Path) -> None:
    outcome = optimize(pipeline_dir, "sklearn", INT8, None, allow_pickle=True)
    assert outcome.reason == contract.REASON_OPTIMIZED
    assert outcome.applied == ["onnx"]
    assert "int8 quantization does not apply: the ONNX graph has no MatMul or Gemm" in outcome.notes


def test_quantizable_looks_for_matmul_or_gemm(pipeline_dir: Path, mlp_dir: Path) -> None:
    linear = convert.to_onnx(load_model("sklearn", _options(pipeline_dir)))
    mlp = convert.to_onnx(load_model("sklearn", _options(mlp_dir)))
    assert not convert.quantizable(linear.graph)
    assert convert.quantizable(mlp.graph)
    assert [(o.served, o.kind) for o in mlp.outputs] == [("predict", "label"), ("predict_proba", "values")]


def test_below_the_gate_serves_the_original_with_the_figure(mlp_dir: Path) -> None:
    strict = OptimizeSettings(
        onnx=True, quantize="int8", gate=GateSettings(max_abs_error=1e-6, max_rel_error=1e-6)
    )
    outcome = optimize(mlp_dir, "sklearn", strict, None, allow_pickle=True)
    assert outcome.reason == contract.REASON_OPTIMIZATION_REJECTED
    assert outcome.gate is not None
    assert outcome.gate["passed"] is False
    assert outcome.gate["maxAbsErrorMeasured"] > 1e-6
    assert f"max absolute error {outcome.gate['maxAbsErrorMeasured']:.3g}" in outcome.message
    assert "serving the original" in outcome.message
    record = read_record(mlp_dir)
    assert record is not None
    assert record["serve"] is False
    assert served_model(_options(mlp_dir), record) is None
    model = load(ServeConfig(model_dir=mlp_dir, format="sklearn", name="m", allow_pickle=True))
    assert model.engine is None  # scikit-learn itself


def test_regressor_is_compared_by_error(tmp_path: Path) -> None:
    features, _ = iris()
    model_dir = _save(tmp_path / "lr", LinearRegression().fit(features[:, :3], features[:, 3]))
    outcome = optimize(model_dir, "sklearn", ONNX, None, allow_pickle=True)
    assert outcome.reason == contract.REASON_OPTIMIZED, outcome.message
    assert outcome.gate is not None
    assert "agreement" not in outcome.gate
    assert outcome.gate["sample"] == "signature"
    assert outcome.gate["maxRelErrorMeasured"] < 1e-4
    served = load(ServeConfig(model_dir=model_dir, format="sklearn", name="m", allow_pickle=True))
    assert served.predict({"input-0": features[:5, :3]}, ["predict"])["predict"].shape == (5,)


def test_a_model_without_an_onnx_form_is_reported(tmp_path: Path) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.naive_bayes import MultinomialNB

    text = make_pipeline(TfidfVectorizer(), MultinomialNB()).fit(["good day", "bad day"], [1, 0])
    outcome = optimize(_save(tmp_path / "text", text), "sklearn", ONNX, None, allow_pickle=True)
    assert outcome.reason == contract.REASON_OPTIMIZATION_FAILED
    assert "float inputs of shape (N, features...) only; input input-0 is BYTES [-1]" in outcome.message
    assert "serving the original" in outcome.message


def test_cache_is_kept_by_digest_and_reused(pipeline_dir: Path, tmp_path: Path) -> None:
    cache = DirCache(tmp_path / "cache")
    first = optimize(pipeline_dir, "sklearn", ONNX, cache, allow_pickle=True)
    again = optimize(pipeline_dir, "sklearn", ONNX, cache, allow_pickle=True)
    assert first.cache.startswith("stored in")
    assert again.cache.startswith("found in")
    # The figures come from the one measurement: a second pod reports the same status.
    assert {**first.status(), "cache": ""} == {**again.status(), "cache": ""}
    (entry,) = (tmp_path / "cache").iterdir()
    (entry / contract.OPTIMIZED_MODEL_FILE).write_bytes(b"tampered")
    remade = optimize(pipeline_dir, "sklearn", ONNX, cache, allow_pickle=True)
    assert remade.cache.startswith("stored in")  # a wrong entry is made again, not served


def test_cache_location_is_outside_the_pulled_prefix() -> None:
    from modelplane_runtime.optimize.cache import S3Cache
    from modelplane_runtime.storage.base import Settings

    cache = cache_for("s3://models/iris/", Settings())
    assert isinstance(cache, S3Cache)
    assert cache.prefix == "iris.modelplane-optimized"
    assert cache_for("https://example.invalid/m.joblib", Settings()) is None


def test_termination_line_fits_and_parses() -> None:
    outcome = Outcome(contract.REASON_OPTIMIZATION_FAILED, "x" * 9000, {"digest": "sha256:" + "b" * 64},
                      notes=["y" * 9000])  # fmt: skip
    line = termination_line(outcome)
    assert len(line.encode()) <= 4096
    parsed = contract.parse_termination_message(line)
    assert parsed.reason == contract.REASON_OPTIMIZATION_FAILED
    assert json.loads(parsed.message)["original"]["digest"] == "sha256:" + "b" * 64


def test_main_writes_the_termination_message(pipeline_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    log.touch()
    settings = json.dumps({"onnx": True, "gate": {"minAgreement": 0.95}})
    code = main(["--model-dir", str(pipeline_dir), "--format", "sklearn", "--allow-pickle", "true",
                 "--settings", settings, "--termination-log", str(log)])  # fmt: skip
    assert code == contract.EXIT_OK
    reason, _, body = log.read_text().strip().partition(": ")
    assert reason == contract.REASON_OPTIMIZED
    assert json.loads(body)["gate"]["minAgreement"] == 0.95
    assert main(["--format", "sklearn", "--settings", '{"quantize": "int4"}']) == contract.EXIT_USAGE


def test_the_server_answers_through_the_optimized_form(mlp_dir: Path, tmp_path: Path) -> None:
    """The pod's order, on the host: the step's CLI on the pulled directory, then `serve` on it."""
    import httpx

    from tests.runtime.serving import serving

    log = tmp_path / "termination-log"
    log.touch()
    settings = json.dumps({"onnx": True, "quantize": "int8"})
    argv = ["--model-dir", str(mlp_dir), "--format", "sklearn", "--allow-pickle", "true"]
    assert main([*argv, "--settings", settings, "--termination-log", str(log)]) == contract.EXIT_OK
    assert log.read_text().startswith(f"{contract.REASON_OPTIMIZED}: ")
    original = joblib.load(mlp_dir / "model.joblib")
    features = iris()[0]
    env = {contract.ENV_ALLOW_PICKLE: "true"}
    with serving(mlp_dir, "sklearn", tmp_path, name="mlp", args=["--workers", "1"], env=env) as server:
        meta = httpx.get(f"{server.url}/v2/models/mlp").json()
        answer = httpx.post(
            f"{server.url}/v1/models/mlp:predict", json={"instances": features.tolist()}
        ).json()
    assert meta["platform"] == "sklearn"
    assert meta["parameters"]["engine"].startswith("onnxruntime")
    assert meta["parameters"]["originalDigest"] == "sha256:" + "a" * 64
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    agreement = np.mean(np.array(answer["predictions"]) == original.predict(features))
    assert agreement >= contract.GATE_MIN_AGREEMENT


def _boosted_dir(model_dir: Path, library: str, objective: str) -> Path:
    """A small booster of ``library`` trained with ``objective``, saved as its format loads it."""
    from sklearn.datasets import make_classification, make_regression

    classes = 3 if objective.startswith("multi") else 2
    if objective.startswith(("reg", "regression")):
        features, target = make_regression(n_samples=400, n_features=6, random_state=3)
    else:
        features, target = make_classification(
            n_samples=400, n_features=6, n_informative=4, n_classes=classes, random_state=3
        )
    model_dir.mkdir(parents=True)
    if library == "xgboost":
        import xgboost

        params: dict[str, Any] = {"objective": objective, "max_depth": 3}
        params |= {"num_class": classes} if classes > 2 else {}
        artifact = model_dir / "model.json"
        train = xgboost.DMatrix(features, label=target)
        xgboost.train(params, train, num_boost_round=20).save_model(str(artifact))
    else:
        import lightgbm

        params = {"objective": objective, "verbose": -1, "num_leaves": 8}
        params |= {"num_class": classes} if classes > 2 else {}
        artifact = model_dir / "model.txt"
        data = lightgbm.Dataset(features, label=target)
        lightgbm.train(params, data, num_boost_round=20).save_model(str(artifact))
    record = {"uri": f"file://{artifact}", "digest": "sha256:" + "c" * 64, "bytes": artifact.stat().st_size}
    (model_dir / contract.PULL_RECORD_FILE).write_text(json.dumps(record))
    np.save(model_dir.parent / f"{model_dir.name}-features.npy", features)
    return model_dir


@pytest.mark.parametrize(
    ("library", "objective"),
    [
        ("xgboost", "multi:softprob"),
        ("xgboost", "multi:softmax"),
        ("xgboost", "binary:logistic"),
        ("xgboost", "reg:squarederror"),
        ("lightgbm", "multiclass"),
        ("lightgbm", "binary"),
        ("lightgbm", "regression"),
    ],
)
def test_boosters_convert_and_answer_like_the_library(library: str, objective: str, tmp_path: Path) -> None:
    model_dir = _boosted_dir(tmp_path / "model", library, objective)
    outcome = optimize(model_dir, library, INT8, None)
    assert outcome.reason == contract.REASON_OPTIMIZED, outcome.message
    assert outcome.applied == ["onnx"]  # trees have no MatMul/Gemm: int8 is said not to apply
    assert any(note.startswith("converter: onnxmltools") for note in outcome.notes)
    assert "int8 quantization does not apply: the ONNX graph has no MatMul or Gemm" in outcome.notes
    assert outcome.gate is not None
    assert outcome.gate["passed"] is True
    assert outcome.gate["sample"] == "signature"
    print(library, objective, outcome.gate)  # noqa: T201 - the measured figures, in the test's report
    record = read_record(model_dir)
    assert record is not None
    served = served_model(_options(model_dir), record)
    original = load_model(library, _options(model_dir))
    assert served is not None
    assert [spec.as_dict() for spec in served.inputs] == [spec.as_dict() for spec in original.inputs]
    features = np.load(tmp_path / "model-features.npy")
    rows = {"input-0": features.astype(NUMPY_BY_DATATYPE[original.inputs[0].datatype])}
    got = served.predict(rows, ["predict"])["predict"]
    want = original.predict(rows, ["predict"])["predict"]
    assert (got.shape, got.dtype) == (want.shape, want.dtype)
    if objective == "multi:softmax":
        assert np.mean(got == want) >= contract.GATE_MIN_AGREEMENT  # the class itself
    else:
        # Float32 thresholds in ONNX: a row right at a split may take the other branch (the gate's
        # bound); everywhere else the same trees give the same numbers.
        close = np.isclose(got, want, rtol=1e-4, atol=1e-4)
        assert np.mean(close) >= contract.GATE_MIN_AGREEMENT, np.abs(got - want).max()


def test_a_booster_objective_without_a_known_answer_is_reported(tmp_path: Path) -> None:
    import xgboost

    features, _ = iris()
    model_dir = tmp_path / "margins"
    model_dir.mkdir()
    labels = features[:, 0] > 5
    booster = xgboost.train({"objective": "binary:logitraw"}, xgboost.DMatrix(features, label=labels))
    booster.save_model(str(model_dir / "model.json"))
    outcome = optimize(model_dir, "xgboost", ONNX, None)
    assert outcome.reason == contract.REASON_OPTIMIZATION_FAILED
    assert "xgboost objective binary:logitraw is not converted here" in outcome.message
    assert "serving the original" in outcome.message
