"""Fixtures of the operator's end-to-end tests: the host operator, the S3 server with real models, and
helpers that wait on a ModelDeployment's own state (never on a bare sleep)."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import yaml

from tests.support.cluster import REPO_ROOT, Cluster, make_print

NODE_IP = "172.28.0.1"
HTTP_MODELS_PORT = 8765  # examples/xgboost-http.yaml names it
EXAMPLES = REPO_ROOT / "examples"
OPERATOR_USER = "system:serviceaccount:modelplane-system:modelplane-operator"
T = TypeVar("T")


def make(*targets: str) -> None:
    subprocess.run(["make", "-s", "--no-print-directory", *targets], cwd=REPO_ROOT, check=True)


@pytest.fixture
def operator(cluster: Cluster) -> Path:
    """The host operator (make operator-up is idempotent: a test elsewhere may have stopped it)."""
    make("operator-up")
    return Path(make_print("operator-log"))


@dataclass(frozen=True)
class S3:
    env: dict[str, str]

    @property
    def bucket(self) -> str:
        return self.env["MODELPLANE_S3_BUCKET"]

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env.get("AWS_REGION", "us-east-1"),
        )

    def upload(self, key: str, data: bytes) -> str:
        """Put an object; its sha256 digest as the ModelDeployment pins it."""
        self.client().put_object(Bucket=self.bucket, Key=key, Body=data)
        return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def s3() -> S3:
    make("s3")
    lines = make_print("s3-env").splitlines()
    return S3(dict(line.split("=", 1) for line in lines if "=" in line))


@dataclass(frozen=True)
class SklearnModel:
    key: str
    digest: str
    estimator: Any
    sample: list[list[float]]

    def expected(self) -> list[Any]:
        return [v.item() if hasattr(v, "item") else v for v in self.estimator.predict(np.array(self.sample))]


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
def iris_models(s3: S3) -> dict[str, SklearnModel]:
    """Two versions of an iris classifier in S3, at the keys the examples name."""
    sample = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.0, 2.2, 5.0, 1.5]]
    models = {}
    for version, key, c in (
        ("v1", "examples/iris/model.joblib", 1.0),
        ("v2", "examples/iris-v2/model.joblib", 0.05),
    ):
        data, estimator = _train_iris(c)
        models[version] = SklearnModel(key, s3.upload(key, data), estimator, sample)
    return models


@pytest.fixture(scope="session")
def http_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A plain HTTP server on the node IP (pods reach it there) serving a directory of models."""
    root = tmp_path_factory.mktemp("http-models")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((NODE_IP, HTTP_MODELS_PORT), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root
    server.shutdown()
    server.server_close()


def eventually(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 1.0) -> T:
    """Poll ``probe`` until it returns something other than None/False, within a deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last is not None and last is not False:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def example(name: str, **replace: str) -> list[dict[str, Any]]:
    """An example's documents, with strings substituted (the local endpoint, keys, digests)."""
    text = (EXAMPLES / name).read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    return [doc for doc in yaml.safe_load_all(text) if doc]


ZERO_DIGEST = "sha256:" + "0" * 64


def credentials_secret(s3: S3, name: str = "s3-credentials") -> dict[str, Any]:
    keys = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "stringData": {key: s3.env[key] for key in keys if key in s3.env},
    }


def with_local_credentials(docs: list[dict[str, Any]], s3: S3) -> list[dict[str, Any]]:
    return [credentials_secret(s3) if doc["kind"] == "Secret" else doc for doc in docs]


def md(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return cluster.get("modeldeployment", name, namespace)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            result: dict[str, Any] = item
            return result
    return {}


def wait_ready(cluster: Cluster, namespace: str, name: str, timeout: float = 240) -> dict[str, Any]:
    """Ready=True for the current generation."""

    def ready() -> dict[str, Any] | None:
        obj = md(cluster, namespace, name)
        status = obj.get("status") or {}
        if status.get("observedGeneration") != obj["metadata"]["generation"]:
            return None
        return obj if condition(obj, "Ready").get("status") == "True" else None

    try:
        return eventually(ready, timeout, f"md/{name} Ready")
    except AssertionError:
        print(cluster.kubectl("get", "md,deploy,pods", "-n", namespace, "-o", "wide", check=False).stdout)
        print(json.dumps(md(cluster, namespace, name).get("status"), indent=1))
        raise


def wait_reason(
    cluster: Cluster, namespace: str, name: str, reasons: set[str], timeout: float = 180
) -> dict[str, Any]:
    def reason() -> dict[str, Any] | None:
        obj = md(cluster, namespace, name)
        return obj if condition(obj, "Ready").get("reason") in reasons else None

    return eventually(reason, timeout, f"md/{name} Ready reason in {reasons}")


def children(cluster: Cluster, namespace: str, name: str, kind: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", kind, "-n", namespace, "-l", f"modelplane.io/name={name}", "-o", "json"
    ).stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def predict_v1(cluster: Cluster, namespace: str, service: str, model: str, instances: list[Any]) -> list[Any]:
    """A v1 prediction through the Service's ClusterIP (kube-proxy's rules on the host)."""
    cluster_ip = cluster.get("service", service, namespace)["spec"]["clusterIP"]
    request = urllib.request.Request(
        f"http://{cluster_ip}/v1/models/{model}:predict",
        data=json.dumps({"instances": instances}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
    predictions: list[Any] = body["predictions"]
    return predictions
