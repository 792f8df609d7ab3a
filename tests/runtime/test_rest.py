"""KServe v1 and OIP v2 over REST against a running `modelplane-runtime serve` process."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import modelplane_contract as contract
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from tests.runtime.models import iris
from tests.runtime.serving import RunningServer

FEATURES, _ = iris()
ROWS = FEATURES[::10]


@pytest.fixture
def client(iris_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=iris_server.url, timeout=30) as client:
        yield client


def test_health_and_metadata(client: httpx.Client, iris_model: tuple[Path, LogisticRegression]) -> None:
    assert client.get(contract.LIVE_PATH).json() == {"live": True}
    assert client.get(contract.READY_PATH).json() == {"ready": True}
    assert client.get("/v2").json()["name"] == "modelplane-runtime"
    assert client.get("/v2/models/iris/ready").json() == {"name": "iris", "ready": True}
    metadata = client.get("/v2/models/iris").json()
    assert metadata["platform"] == "sklearn"
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert "engine" not in metadata.get("parameters", {})  # scikit-learn's own predict
    assert client.get("/v1/models/iris").json() == {"name": "iris", "ready": True}


def test_v2_infer_equals_sklearn(client: httpx.Client, iris_model: tuple[Path, LogisticRegression]) -> None:
    estimator = iris_model[1]
    response = client.post(
        "/v2/models/iris/infer",
        json={
            "id": "r1",
            "inputs": [
                {"name": "x", "shape": list(ROWS.shape), "datatype": "FP64", "data": ROWS.ravel().tolist()}
            ],
            "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "r1"
    assert body["model_name"] == "iris"
    predict, proba = body["outputs"]
    assert predict == {
        "name": "predict",
        "shape": [len(ROWS)],
        "datatype": "INT64",
        "data": estimator.predict(ROWS).tolist(),
    }
    np.testing.assert_array_equal(np.reshape(proba["data"], proba["shape"]), estimator.predict_proba(ROWS))


def test_v1_predict_equals_sklearn(client: httpx.Client, iris_model: tuple[Path, LogisticRegression]) -> None:
    response = client.post("/v1/models/iris:predict", json={"instances": ROWS.tolist()})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": iris_model[1].predict(ROWS).tolist()}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/v2/models/iris/infer", b"{nope", 400, "not valid JSON"),
        (
            "POST",
            "/v2/models/iris/infer",
            b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}',
            400,
            "expects [-1, 4]",
        ),
        (
            "POST",
            "/v2/models/iris/infer",
            b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT8", "data": [1, 2, 3, 1000]}]}',
            400,
            "outside the range of INT8",
        ),
        ("POST", "/v2/models/other/infer", b"{}", 404, "model 'other' is not served here"),
        ("GET", "/v2/models/other", b"", 404, "model 'other' is not served here"),
        ("GET", "/v2/models/other/ready", b"", 404, "not served here"),
        ("POST", "/v1/models/iris:predict", b'{"instances": [[1, 2]]}', 400, "expects [-1, 4]"),
        ("POST", "/v1/models/other:predict", b'{"instances": [[1, 2, 3, 4]]}', 404, "not served here"),
        ("GET", "/v3/anything", b"", 404, "no route /v3/anything"),
        ("DELETE", "/v2/models/iris", b"", 405, "DELETE /v2/models/iris is not supported"),
    ],
)
def test_errors_are_json_naming_the_problem(
    client: httpx.Client, method: str, path: str, body: bytes, status: int, message: str
) -> None:
    response = client.request(method, path, content=body)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]


def test_oversized_bodies_get_413_and_the_server_keeps_serving(client: httpx.Client) -> None:
    huge = (
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ['
        + b"1," * (9 << 20)
        + b"1]}]}"
    )
    response = client.post("/v2/models/iris/infer", content=huge)
    assert response.status_code == 413
    assert "exceeds the limit" in response.json()["error"]
    assert client.get(contract.READY_PATH).status_code == 200


def test_metrics_count_requests_by_protocol_and_code(client: httpx.Client) -> None:
    for _ in range(3):
        client.post("/v1/models/iris:predict", json={"instances": [[1, 2, 3, 4]]})
    client.post("/v1/models/iris:predict", json={"instances": [[1]]})

    def total(code: str) -> float:
        text = client.get(contract.METRICS_PATH).text
        pattern = rf'^{contract.METRIC_REQUESTS_TOTAL}{{code="{code}",model="iris",protocol="v1"}} (\S+)$'
        match = re.search(pattern, text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    # Workers write their counts to the shared files at least once a second; poll until they do.
    deadline = time.monotonic() + 10
    while (total("200") < 3 or total("400") < 1) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert total("200") >= 3
    assert total("400") >= 1
    text = client.get(contract.METRICS_PATH).text
    for name in (
        contract.METRIC_REQUEST_SECONDS + "_bucket",
        contract.METRIC_IN_FLIGHT,
        contract.METRIC_BATCH_SIZE + "_count",
        contract.METRIC_QUEUE_WAIT_SECONDS + "_count",
        contract.METRIC_MODEL_LOAD_SECONDS,
    ):
        assert f"\n{name}{{" in text, name
