"""The chart's Gateway on the local cluster (`make gateway`): its reference, its address, its
certificate, ModelDeployments that name it, the wait for Envoy to have a new route, and requests
to it from the host."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from typing import Any, Final

import modelplane_contract as contract
import pytest

from tests.support.cluster import Cluster, make, wait_until
from tests.support.examples import CREDENTIALS_SECRET
from tests.support.modeldeployments import condition, model_deployment

#: spec.gateway of a ModelDeployment reached through the chart's Gateway.
GATEWAY: Final = {"name": "modelplane", "namespace": "modelplane-system"}
TLS_SECRET: Final = "modelplane-gateway-tls"
#: Where Envoy Gateway runs the Gateway's Envoy pods, and their label.
ENVOY_NAMESPACE: Final = "envoy-gateway-system"
ENVOY_PODS: Final = f"gateway.envoyproxy.io/owning-gateway-name={GATEWAY['name']}"


@pytest.fixture(scope="module")
def gateway_up() -> None:
    make("gateway")  # idempotent: e2e-prerequisites brought it up


def envoy_pods(cluster: Cluster) -> list[dict[str, Any]]:
    """The Gateway's Envoy pods that serve (Ready): a pod the kubelet lost track of
    (ContainerStatusUnknown after a node restart) keeps its labels and a dead address."""
    pods = cluster.kubectl("get", "pods", "-n", ENVOY_NAMESPACE, "-l", ENVOY_PODS, "-o", "json").stdout
    serving = [pod for pod in json.loads(pods)["items"] if condition(pod, "Ready").get("status") == "True"]
    assert serving, f"no Ready Envoy pod of the Gateway ({ENVOY_PODS})"
    return serving


def gateway_address(cluster: Cluster) -> str:
    """The Gateway's first address (what status.url names)."""
    gateway = cluster.get("gateway", GATEWAY["name"], GATEWAY["namespace"])
    address: str = gateway["status"]["addresses"][0]["value"]
    return address


def model_md(name: str, model: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A ModelDeployment of MODEL (a spec.model without its credentials) that names the chart's Gateway."""
    model = {**model, "credentialsSecret": CREDENTIALS_SECRET}
    return model_deployment(name, {"model": model, "gateway": GATEWAY, **spec})


def gateway_ca(cluster: Cluster) -> bytes:
    """The Gateway's self-signed certificate (the harness made it; it names the node's address)."""
    secret = cluster.get("secret", TLS_SECRET, GATEWAY["namespace"])
    return base64.b64decode(secret["data"]["tls.crt"])


def wait_routed(url: str, context: ssl.SSLContext | None = None) -> None:
    """Until Envoy has the route and its endpoints: the Gateway reports Accepted when it has translated
    the route, and pushes it to Envoy a moment later; until then Envoy answers 404 (no route). The
    endpoints of a pod that just became ready follow the same way, and until they arrive Envoy answers
    503 "no healthy upstream". Only those two answers of Envoy's own are waited out: any other failure
    (a 503 from a pod, a reset, a timeout) fails the test at once. It asks for liveness, not readiness:
    Envoy only picks ready endpoints, and until Envoy Gateway has pushed the removal of a pod that is
    draining (a canary's stable track shrinking as the ModelDeployment turns Ready), that pod still
    gets requests, serves them, and says it is not ready."""

    def routed() -> bool:
        try:
            with urllib.request.urlopen(
                f"{url}{contract.LIVE_PATH}", timeout=10, context=context
            ) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError as error:
            server, body = error.headers.get("server"), error.read()
            no_route, no_endpoint = error.code == 404, error.code == 503 and body == b"no healthy upstream"
            if server == "envoy" and (no_route or no_endpoint):
                return False
            answer = f"{error.code} from {server!r}: {body[:500]!r}"
            raise AssertionError(f"{url}{contract.LIVE_PATH}: {answer}") from error

    wait_until(f"Envoy to route {url}", routed, timeout=30, interval=0.5)


def post(url: str, body: Any, context: ssl.SSLContext | None = None, timeout: float = 30) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
        return json.loads(response.read())
