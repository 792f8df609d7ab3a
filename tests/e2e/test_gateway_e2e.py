"""The front door on the local cluster: Envoy Gateway and Envoy from images built here (make gateway), the
chart's Gateway modelplane-system/modelplane, and ModelDeployments that name it (spec.gateway).

From the host, through Envoy only: a prediction over HTTP and HTTPS at status.url, a request longer than
Envoy's default 15 s route timeout, and a route the Gateway refuses reported in our Ready condition.
"""

from __future__ import annotations

import http.client
import io
import json
import ssl
import tarfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
from modelplane_runtime.grpc.generated import inference_pb2 as pb
from modelplane_runtime.grpc.generated import inference_pb2_grpc as pb_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import Cluster, wait_until
from tests.support.examples import CREDENTIALS_SECRET, credentials_secret
from tests.support.gateway import GATEWAY, gateway_ca, model_md, post, wait_routed
from tests.support.modeldeployments import (
    children,
    condition,
    md,
    s3_model_spec,
    wait_ready,
    wait_reason,
)
from tests.support.models import SklearnModel
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e

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


def custom_model(s3: S3Server, module: str, source: str) -> dict[str, Any]:
    """spec.model of format custom: a tar.gz holding MODULE.py, in S3, its digest pinned (code shipped in
    an artifact runs only so)."""
    data = source.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{module}.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    key = f"gateway/{module}.tar.gz"
    digest = s3.upload(key, buffer.getvalue())
    return {"uri": f"s3://{s3.bucket}/{key}", "format": "custom", "digest": digest}


def grpc_predict(address: str, ca: bytes, model_header: str, rows: list[list[float]]) -> list[int]:
    """An OIP v2 ModelInfer over TLS to ADDRESS, routed by the modelplane-model header."""
    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP64", shape=[len(rows), len(rows[0])])
    tensor.contents.fp64_contents.extend(value for row in rows for value in row)
    request = pb.ModelInferRequest(model_name="iris", inputs=[tensor])
    with grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=ca)) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        response = stub.ModelInfer(request, metadata=[("modelplane-model", model_header)], timeout=30)
    (predict,) = [o for o in response.outputs if o.name == "predict"]
    return list(predict.contents.int64_contents)


def test_a_model_is_served_through_the_gateway_over_http_and_https(
    cluster: Cluster,
    namespace: str,
    operator: Path,
    gateway_up: None,
    s3: S3Server,
    iris_models: dict[str, SklearnModel],
) -> None:
    iris = iris_models["v1"]
    sklearn = s3_model_spec(iris)
    slow_env = [{"name": "MODELPLANE_CUSTOM_CLASS", "value": "slowsum:SlowSum"}]
    cluster.apply(
        [
            credentials_secret(s3),
            model_md("iris", sklearn),
            model_md(
                "slow",
                custom_model(s3, "slowsum", SLOW_MODEL),
                runtime={"env": slow_env, "requestTimeoutSeconds": 60},
            ),
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

    ca = gateway_ca(cluster)
    tls = ssl.create_default_context(cadata=ca.decode())
    wait_routed(url, tls)
    expected = iris.expected()
    body = {"instances": iris.sample}
    assert post(f"{url}/v1/models/iris:predict", body, tls)["predictions"] == expected
    plain = f"http://{address}/{namespace}/iris"
    assert post(f"{plain}/v1/models/iris:predict", body)["predictions"] == expected
    # gRPC through the HTTPS listener: by its content-type and the model header, to the h2c port.
    assert obj["status"]["grpcUrl"] == f"{address}:443"
    assert grpc_predict(obj["status"]["grpcUrl"], ca, f"{namespace}/iris", iris.sample) == expected

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
    sklearn = s3_model_spec(iris)
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


# --- exact split and shadow ------------------------------------------------------------------------

# The iris sample's last row tells the two iris models apart: v1 answers 2, v2 answers 1.
TELLING_ROW = [6.0, 2.2, 5.0, 1.5]
SPLIT_REQUESTS = 2000
SPLIT_PERCENT = 20
SHADOW_REQUESTS = 300
# A shadow whose every call fails: the runtime answers 500.
BROKEN_MODEL = """
class Broken:
    def __init__(self, model_dir):
        self.model_dir = model_dir

    def predict(self, inputs):
        raise RuntimeError("this shadow is broken")
"""


def iris_model(model: SklearnModel, version: str) -> dict[str, Any]:
    return {**s3_model_spec(model), "version": version}


def answers_of(host: str, path: str, count: int) -> Counter[int]:
    """COUNT v1 predictions of the telling row over one kept-alive connection to the Gateway, by answer;
    anything but a 200 fails at once (nothing is retried)."""
    body = json.dumps({"instances": [TELLING_ROW]}).encode()
    connection = http.client.HTTPConnection(host, 80, timeout=30)
    seen: Counter[int] = Counter()
    try:
        for _ in range(count):
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
            assert response.status == 200, (response.status, data[:200])
            (prediction,) = json.loads(data)["predictions"]
            seen[prediction] += 1
    finally:
        connection.close()
    return seen


def live_pods_of(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    """The pods SELECTOR selects that are not terminating."""
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout)
    return [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]


def pod_requests(cluster: Cluster, namespace: str, selector: str) -> Counter[str]:
    """The runtime's request counter (by status code) of the one pod SELECTOR selects, read at its IP."""
    (pod,) = live_pods_of(cluster, namespace, selector)
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:8080/metrics", timeout=10) as response:
        text = response.read().decode()
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "modelplane_requests_total" and sample.labels.get("protocol") == "v1":
                counts[sample.labels["code"]] += int(sample.value)
    return counts


def test_a_canary_gets_exactly_its_percent_through_the_gateway(
    cluster: Cluster,
    namespace: str,
    operator: Path,
    gateway_up: None,
    s3: S3Server,
    iris_models: dict[str, SklearnModel],
) -> None:
    """Two pods, one per track (a 50/50 pod ratio), yet 20% of the requests reach the canary."""
    canary = {
        "strategy": "Canary",
        "canary": {"trafficPercent": SPLIT_PERCENT, "model": iris_model(iris_models["v2"], "v2")},
    }
    split = model_md("split", iris_model(iris_models["v1"], "v1"), replicas=2, rollout=canary)
    cluster.apply([credentials_secret(s3), split], namespace)
    obj = wait_ready(cluster, namespace, "split")
    assert obj["status"]["canary"]["readyReplicas"] == 1
    assert obj["status"]["stable"]["readyReplicas"] == 1
    (route,) = children(cluster, namespace, "split", "httproute")
    weights = [(b["name"], b["weight"]) for b in route["spec"]["rules"][-1]["backendRefs"]]
    assert weights == [("split-stable", 100 - SPLIT_PERCENT), ("split-canary", SPLIT_PERCENT)]
    address = cluster.get("gateway", GATEWAY["name"], GATEWAY["namespace"])["status"]["addresses"][0]["value"]
    plain = f"http://{address}/{namespace}/split"
    wait_routed(plain)
    seen = answers_of(address, f"/{namespace}/split/v1/models/split:predict", SPLIT_REQUESTS)
    assert set(seen) <= {1, 2}, seen
    share = 100 * seen[1] / SPLIT_REQUESTS  # v2 (the canary) answers 1
    print(f"canary share through the Gateway: {share:.1f}% of {SPLIT_REQUESTS} ({dict(seen)})")  # noqa: T201
    assert abs(share - SPLIT_PERCENT) <= 3, seen


def test_a_shadow_gets_a_copy_of_every_request_and_clients_never_see_it(
    cluster: Cluster,
    namespace: str,
    operator: Path,
    gateway_up: None,
    s3: S3Server,
    iris_models: dict[str, SklearnModel],
) -> None:
    live = iris_model(iris_models["v1"], "v1")
    shadowed = model_md(
        "mirror", live, rollout={"shadow": {"percent": 100, "model": iris_model(iris_models["v2"], "v2")}}
    )
    cluster.apply([credentials_secret(s3), shadowed], namespace)
    obj = wait_ready(cluster, namespace, "mirror")
    wait_until(
        "the shadow's pod Ready",
        lambda: (md(cluster, namespace, "mirror")["status"].get("shadow") or {}).get("readyReplicas") == 1,
    )
    assert obj["status"]["desiredReplicas"] == 1  # the shadow is not one of the model's replicas
    address = cluster.get("gateway", GATEWAY["name"], GATEWAY["namespace"])["status"]["addresses"][0]["value"]
    path = f"/{namespace}/mirror/v1/models/mirror:predict"
    wait_routed(f"http://{address}/{namespace}/mirror")
    live_pods = "modelplane.io/name=mirror,modelplane.io/track=stable"
    shadow_pods = "modelplane.io/shadow-of=mirror"
    before_live, before_shadow = (
        pod_requests(cluster, namespace, live_pods),
        pod_requests(cluster, namespace, shadow_pods),
    )
    # Every answer is the live model's (v1 answers 2); none is the shadow's.
    assert answers_of(address, path, SHADOW_REQUESTS) == Counter({2: SHADOW_REQUESTS})
    live_count = pod_requests(cluster, namespace, live_pods)["200"] - before_live["200"]
    assert live_count == SHADOW_REQUESTS

    def mirrored() -> int | None:  # Envoy sends the copies without waiting for them: they may trail
        count = pod_requests(cluster, namespace, shadow_pods)["200"] - before_shadow["200"]
        return count if count >= 0.98 * live_count else None

    shadow_count = wait_until("the shadow's copies", mirrored, timeout=30)
    assert abs(shadow_count - live_count) <= 0.02 * live_count, (shadow_count, live_count)

    # A shadow that answers 500 to everything changes nothing for clients.
    broken = {**custom_model(s3, "broken", BROKEN_MODEL), "credentialsSecret": CREDENTIALS_SECRET}
    shadowed["spec"]["rollout"]["shadow"]["model"] = broken
    shadowed["spec"]["runtime"] = {"env": [{"name": "MODELPLANE_CUSTOM_CLASS", "value": "broken:Broken"}]}
    cluster.apply([shadowed], namespace)

    def broken_shadow_ready() -> bool:
        status = md(cluster, namespace, "mirror")["status"]
        shadow = status.get("shadow") or {}
        return bool(
            shadow.get("uri") == broken["uri"]
            and shadow.get("readyReplicas") == 1
            and len(live_pods_of(cluster, namespace, shadow_pods)) == 1  # the previous shadow pod gone
        )

    wait_until("the broken shadow's pod Ready", broken_shadow_ready, timeout=240)
    wait_ready(cluster, namespace, "mirror")

    # Envoy learns the new shadow pod's address from Envoy Gateway a moment after the pod is Ready;
    # the copies it sends before go to the old pod's address and are lost, unseen by clients (which is
    # what a shadow promises). Counting starts once a copy has landed on the new pod.
    first = pod_requests(cluster, namespace, shadow_pods)["500"]

    def a_copy_landed() -> bool:
        if pod_requests(cluster, namespace, shadow_pods)["500"] > first:
            return True
        answers_of(address, path, 1)
        return False

    wait_until("Envoy to mirror to the broken shadow's pod", a_copy_landed, timeout=60, interval=0.5)
    before_shadow = pod_requests(cluster, namespace, shadow_pods)
    assert answers_of(address, path, SHADOW_REQUESTS) == Counter({2: SHADOW_REQUESTS})

    def failed() -> int | None:
        count = pod_requests(cluster, namespace, shadow_pods)["500"] - before_shadow["500"]
        return count if count >= 0.98 * SHADOW_REQUESTS else None

    assert wait_until("the broken shadow's 500s", failed, timeout=30) <= SHADOW_REQUESTS

    # Removing the shadow removes its pods and Service; clients still get the live answers.
    del shadowed["spec"]["rollout"]
    cluster.apply([shadowed], namespace)
    wait_until(
        "the shadow pruned",
        lambda: (
            not [
                d
                for d in children(cluster, namespace, "mirror", "deployment,service")
                if d["metadata"]["name"] == "mirror-shadow"
            ]
        ),
    )
    assert "shadow" not in md(cluster, namespace, "mirror")["status"]
