"""spec.model.optimize on the local cluster: real pods pull from the S3 server, the model-optimize init
container converts (and quantizes) once per digest, and the Service answers through ONNX Runtime; with
spec.model.cache, the cache's fill Job pulls and optimizes once, and the pods run neither."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import joblib
import modelplane_contract as contract
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests.support.cluster import Cluster, wait_until
from tests.support.examples import CREDENTIALS_SECRET, credentials_secret
from tests.support.modeldeployments import (
    assert_no_pull_of_their_own,
    children,
    condition,
    md,
    model_deployment,
    predict_v1,
    request_json,
    service_url,
    serving_pods,
    wait_ready,
    wait_service,
)
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e

FEATURES, LABELS = load_iris(return_X_y=True)


def _artifact(estimator: Any) -> bytes:
    """A .tar.gz of the joblib file and a sample request of ten iris rows (the gate samples near them)."""
    rows = FEATURES[::15]
    request = {
        "inputs": [
            {"name": "input-0", "datatype": "FP64", "shape": list(rows.shape), "data": rows.ravel().tolist()}
        ]
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in (
            ("model.joblib", _joblib(estimator)),
            (contract.WARMUP_REQUEST_FILE, json.dumps(request).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _joblib(estimator: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    return buffer.getvalue()


def _deployment(
    s3: S3Server, name: str, estimator: Any, optimize: dict[str, Any], replicas: int = 1, **model: Any
) -> tuple[dict[str, Any], str]:
    """NAME serving ESTIMATOR from the S3 server with OPTIMIZE (and MODEL's other fields); its digest."""
    key = f"optimize-e2e/{name}/model.tar.gz"
    digest = s3.upload(key, _artifact(estimator))
    spec_model = {
        "uri": f"s3://{s3.bucket}/{key}",
        "format": "sklearn",
        "digest": digest,
        "credentialsSecret": CREDENTIALS_SECRET,
        "optimize": optimize,
        **model,
    }
    return model_deployment(name, {"model": spec_model, "replicas": replicas}), digest


def _optimized(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """The MD once its Optimized condition is decided (True or False) for the current generation."""

    def decided() -> dict[str, Any] | None:
        obj = md(cluster, namespace, name)
        if (obj.get("status") or {}).get("observedGeneration") != obj["metadata"]["generation"]:
            return None
        return obj if condition(obj, "Optimized").get("status") in ("True", "False") else None

    return wait_until(f"md/{name} Optimized decided", decided, timeout=300)


def _agreement(cluster: Cluster, namespace: str, name: str, estimator: Any) -> float:
    served = predict_v1(cluster, namespace, name, name, FEATURES.tolist())
    return float(np.mean(np.array(served) == estimator.predict(FEATURES)))


def _assert_served_optimized(
    cluster: Cluster, namespace: str, name: str, estimator: Any, digest: str, applied: list[str]
) -> dict[str, Any]:
    """NAME Ready and Optimized: status shows what was APPLIED to DIGEST, both sides' sizes and
    latencies, the gate's agreement; through the Service, the optimized form answers like ESTIMATOR
    at the stated threshold. The ModelDeployment as it was then."""
    wait_ready(cluster, namespace, name, timeout=360)
    obj = _optimized(cluster, namespace, name)
    status = obj["status"]
    report = status["optimization"]
    print(name, json.dumps(report))  # noqa: T201 - the figures, in the test's report
    assert condition(obj, "Optimized")["reason"] == "Optimized", report
    assert report["applied"] == applied
    assert report["original"]["digest"] == digest == status["originalDigest"]
    assert status["servedDigest"] == report["optimized"]["digest"] != digest
    for side in ("original", "optimized"):
        assert report[side]["bytes"] > 0
        assert report[side]["p50Batch1Microseconds"] > 0
        assert report[side]["p50Batch64Microseconds"] > 0
    gate = report["gate"]
    assert gate["passed"] is True
    assert gate["sample"] == contract.WARMUP_REQUEST_FILE
    assert gate["agreement"] >= gate["minAgreement"] == contract.GATE_MIN_AGREEMENT
    wait_service(cluster, namespace, name)
    assert _agreement(cluster, namespace, name, estimator) >= gate["minAgreement"]
    meta = request_json(f"{service_url(cluster, namespace, name)}/v2/models/{name}")
    assert meta["parameters"]["engine"].startswith("onnxruntime"), meta
    assert meta["parameters"]["digest"] == status["servedDigest"]
    assert meta["parameters"]["originalDigest"] == digest
    return obj


def test_optimize_that_cannot_apply_is_refused_at_apply_time(cluster: Cluster, namespace: str) -> None:
    good = {"uri": "s3://models/iris/model.joblib", "format": "sklearn"}
    cases = [
        (
            {**good, "format": "pytorch", "optimize": {"onnx": True}},
            "spec.model.optimize: this format has no ONNX form",
        ),
        ({**good, "optimize": {"quantize": "int8"}}, "spec.model.optimize.quantize"),
        ({**good, "optimize": {}}, "spec.model.optimize asks for nothing"),
        ({**good, "format": "onnx", "optimize": {"onnx": True}}, "spec.model.optimize.onnx"),
        (
            {**good, "optimize": {"onnx": True, "gate": {"minAgreement": 2}}},
            "spec.model.optimize.gate.minAgreement",
        ),
    ]
    for index, (model, says) in enumerate(cases):
        body = model_deployment(f"bad-{index}", {"model": model})
        result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=False)
        assert result.returncode != 0, f"accepted: {model}"
        assert says in result.stderr, f"{says!r} not in: {result.stderr}"


def test_pipeline_onnx_and_mlp_int8_are_served_optimized(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server
) -> None:
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(FEATURES, LABELS)
    mlp = make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=800, random_state=0)
    ).fit(FEATURES, LABELS)
    cluster.apply([credentials_secret(s3)], namespace)
    wanted: dict[str, tuple[Any, dict[str, Any]]] = {
        "pipeline-onnx": (pipeline, {"onnx": True}),
        "mlp-int8": (mlp, {"onnx": True, "quantize": "int8"}),
    }
    digests = {}
    for name, (estimator, optimize) in wanted.items():
        body, digests[name] = _deployment(s3, name, estimator, optimize)
        cluster.apply([body], namespace)
    for name, (estimator, _) in wanted.items():
        applied = ["onnx", "int8"] if name == "mlp-int8" else ["onnx"]
        _assert_served_optimized(cluster, namespace, name, estimator, digests[name], applied)
    # A steady state writes nothing: the figures were measured once, by the step.
    before = md(cluster, namespace, "mlp-int8")["metadata"]["resourceVersion"]
    wait_ready(cluster, namespace, "mlp-int8")
    assert md(cluster, namespace, "mlp-int8")["metadata"]["resourceVersion"] == before


def test_below_the_gate_the_original_is_served_and_status_says_why(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server
) -> None:
    mlp = make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=800, random_state=0)
    ).fit(FEATURES, LABELS)
    cluster.apply([credentials_secret(s3)], namespace)
    strict = {"onnx": True, "quantize": "int8", "gate": {"maxAbsError": 1e-6, "maxRelError": 1e-6}}
    body, digest = _deployment(s3, "mlp-strict", mlp, strict)
    cluster.apply([body], namespace)
    wait_ready(cluster, namespace, "mlp-strict", timeout=360)
    obj = _optimized(cluster, namespace, "mlp-strict")
    optimized = condition(obj, "Optimized")
    report = obj["status"]["optimization"]
    print(json.dumps(report))  # noqa: T201
    assert (optimized["status"], optimized["reason"]) == ("False", "OptimizationRejected")
    measured = report["gate"]["maxAbsErrorMeasured"]
    assert measured > 1e-6
    assert f"max absolute error {measured:.3g}" in optimized["message"]
    assert "serving the original" in optimized["message"]
    assert obj["status"]["servedDigest"] == digest
    assert "originalDigest" not in obj["status"]
    wait_service(cluster, namespace, "mlp-strict")
    served = predict_v1(cluster, namespace, "mlp-strict", "mlp-strict", FEATURES.tolist())
    assert served == mlp.predict(FEATURES).tolist()  # scikit-learn itself: exactly its answers
    meta = request_json(f"{service_url(cluster, namespace, 'mlp-strict')}/v2/models/mlp-strict")
    assert "onnxruntime" not in json.dumps(meta)


def test_with_a_cache_the_fill_job_optimizes_once_and_the_pods_serve_its_form(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server
) -> None:
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(FEATURES, LABELS)
    cluster.apply([credentials_secret(s3)], namespace)
    name = "cached-onnx"
    body, digest = _deployment(s3, name, pipeline, {"onnx": True}, replicas=2, cache={"size": "64Mi"})
    cluster.apply([body], namespace)
    obj = _assert_served_optimized(cluster, namespace, name, pipeline, digest, ["onnx"])
    status = obj["status"]

    # The fill Job pulled and optimized into the claim; the replicas ran neither.
    [cache] = status["caches"]
    assert (cache["state"], cache["digest"]) == ("Ready", digest)
    assert cache["bytes"] == status["optimization"]["original"]["bytes"]
    [job] = children(cluster, namespace, name, "job")
    assert job["metadata"]["name"] == cache["name"]
    assert job["status"]["succeeded"] == 1
    template = job["spec"]["template"]["spec"]
    assert [c["name"] for c in template["initContainers"]] == [contract.PULL_CONTAINER_NAME]
    assert [c["name"] for c in template["containers"]] == [contract.OPTIMIZE_CONTAINER_NAME]
    assert_no_pull_of_their_own(serving_pods(cluster, namespace, name), cache["name"], 2)
    # Measured once, by the Job: a steady state writes nothing.
    before = md(cluster, namespace, name)["metadata"]["resourceVersion"]
    wait_ready(cluster, namespace, name)
    assert md(cluster, namespace, name)["metadata"]["resourceVersion"] == before
