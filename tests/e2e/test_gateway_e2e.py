"""The front door on the local cluster: Envoy Gateway and Envoy from images built here (make gateway), the
chart's Gateway modelplane-system/modelplane, and ModelDeployments that name it (spec.gateway).

From the host, through Envoy only: a prediction over HTTP and HTTPS at status.url, a request longer than
Envoy's default 15 s route timeout, and a route the Gateway refuses reported in our Ready condition.
"""

from __future__ import annotations

import base64
import io
import json
import ssl
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster, make, wait_until
from tests.support.examples import credentials_secret
from tests.support.modeldeployments import children, condition, md, wait_ready, wait_reason
from tests.support.models import SklearnModel
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e

GATEWAY = {"name": "modelplane", "namespace": "modelplane-system"}
TLS_SECRET = "modelplane-gateway-tls"
SLOW_SECONDS = 20.0  # longer than Envoy's default route timeout (15 s), well inside requestTimeoutSeconds
# The custom model of the long request: each call sleeps for the first input, then sums each row.
SLOW_MODEL = """
import time


class SlowSum:
    inputs = [{"name": "x", "datatype": "FP64", "shape": [-1, 2]}]
    outputs = [{"name": "sum", "datatype": "FP64", "shape": [-1]}]

    def __init__(self, model_dir):
        self.model_dir = model_dir

    def predict(self, inputs):
        x = inputs["x"]
        time.sleep(float(x[0, 0]))
        return {"sum": x.sum(axis=1)}
"""


@pytest.fixture(scope="module")
def gateway_up() -> None:
    make("gateway")  # idempotent: e2e-prerequisites brought it up


def model_md(name: str, model: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": {**model, "credentialsSecret": "s3-credentials"}, "gateway": GATEWAY, **spec},
    }


def slow_model(s3: S3Server) -> dict[str, Any]:
    """A tar.gz holding slowsum.py, in S3; its digest pinned (code in an artifact runs only so)."""
    data = SLOW_MODEL.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("slowsum.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    key = "gateway/slowsum.tar.gz"
    return {"uri": f"s3://modelplane/{key}", "format": "custom", "digest": s3.upload(key, buffer.getvalue())}


def gateway_ca(cluster: Cluster, tmp_path: Path) -> ssl.SSLContext:
    """Trust the Gateway's self-signed certificate (the harness made it; it names the node's address)."""
    secret = cluster.get("secret", TLS_SECRET, GATEWAY["namespace"])
    path = tmp_path / "gateway-ca.crt"
    path.write_bytes(base64.b64decode(secret["data"]["tls.crt"]))
    return ssl.create_default_context(cafile=str(path))


def post(url: str, body: Any, context: ssl.SSLContext | None = None, timeout: float = 30) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
        return json.loads(response.read())


def wait_routed(url: str, context: ssl.SSLContext | None = None) -> None:
    """Until Envoy has the route: the Gateway reports Accepted when it has translated the route, and
    pushes it to Envoy a moment later; until then Envoy answers 404 (no route). Only that is waited out:
    any other failure fails the test at once."""

    def routed() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=10, context=context) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError as error:
            if error.code == 404 and error.headers.get("server") == "envoy":
                return False
            raise

    wait_until(f"Envoy to route {url}", routed, timeout=30, interval=0.5)


def test_a_model_is_served_through_the_gateway_over_http_and_https(
    cluster: Cluster,
    namespace: str,
    operator: Path,
    gateway_up: None,
    s3: S3Server,
    iris_models: dict[str, SklearnModel],
    tmp_path: Path,
) -> None:
    iris = iris_models["v1"]
    sklearn = {"uri": iris.uri, "format": "sklearn", "digest": iris.digest}
    slow_env = [{"name": "MODELPLANE_CUSTOM_CLASS", "value": "slowsum:SlowSum"}]
    cluster.apply(
        [
            credentials_secret(s3),
            model_md("iris", sklearn),
            model_md("slow", slow_model(s3), runtime={"env": slow_env, "requestTimeoutSeconds": 60}),
        ],
        namespace,
    )
    obj = wait_ready(cluster, namespace, "iris")
    gateway = cluster.get("gateway", GATEWAY["name"], GATEWAY["namespace"])
    address = gateway["status"]["addresses"][0]["value"]
    # The HTTPS listener is the one handed out; the prefix is the namespace and the model's name.
    url = obj["status"]["url"]
    assert url == f"https://{address}/{namespace}/iris"
    assert obj["status"]["serviceUrl"] == f"http://iris.{namespace}.svc.cluster.local"
    (route,) = children(cluster, namespace, "iris", "httproute")
    assert route["spec"]["parentRefs"][0]["name"] == GATEWAY["name"]
    assert route["spec"]["rules"][-1]["timeouts"] == {"request": "65s"}
    (service,) = [
        s for s in children(cluster, namespace, "iris", "service") if s["metadata"]["name"] == "iris"
    ]
    grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc_port["appProtocol"] == "kubernetes.io/h2c"

    tls = gateway_ca(cluster, tmp_path)
    wait_routed(url, tls)
    expected = iris.expected()
    body = {"instances": iris.sample}
    assert post(f"{url}/v1/models/iris:predict", body, tls)["predictions"] == expected
    plain = f"http://{address}/{namespace}/iris"
    assert post(f"{plain}/v1/models/iris:predict", body)["predictions"] == expected

    # Longer than Envoy's default 15 s: the route's timeout comes from requestTimeoutSeconds.
    slow = wait_ready(cluster, namespace, "slow")
    slow_url = slow["status"]["url"]
    wait_routed(slow_url, tls)
    infer = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 2], "data": [SLOW_SECONDS, 1.0]}]}
    started = time.monotonic()
    answer = post(f"{slow_url}/v2/models/slow/infer", infer, tls, timeout=SLOW_SECONDS + 30)
    took = time.monotonic() - started
    assert answer["outputs"][0]["data"] == [SLOW_SECONDS + 1.0]
    assert took >= SLOW_SECONDS


def test_a_route_the_gateway_refuses_is_not_ready_with_its_message(
    cluster: Cluster,
    namespace: str,
    operator: Path,
    gateway_up: None,
    s3: S3Server,
    iris_models: dict[str, SklearnModel],
) -> None:
    iris = iris_models["v1"]
    sklearn = {"uri": iris.uri, "format": "sklearn", "digest": iris.digest}
    refused = model_md("iris", sklearn)
    refused["spec"]["gateway"] = {**GATEWAY, "sectionName": "no-such-listener"}
    cluster.apply([credentials_secret(s3), refused], namespace)
    obj = wait_reason(cluster, namespace, "iris", {"RouteNotAccepted"})
    ready = condition(obj, "Ready")
    assert ready["status"] == "False"
    assert "Accepted=False" in ready["message"]
    assert condition(obj, "Degraded")["reason"] == "RouteNotAccepted"
    # The fix is a change of the spec: the listener that exists.
    cluster.apply([model_md("iris", sklearn)], namespace)
    assert wait_ready(cluster, namespace, "iris")["status"]["url"].startswith("https://")
    assert md(cluster, namespace, "iris")["status"]["observedGeneration"] == 2
