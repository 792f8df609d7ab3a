"""The chart's Gateway on the local cluster (`make gateway`): ModelDeployments that name it, its
certificate, and requests to it from the host."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request
from typing import Any

import pytest

from tests.support.cluster import Cluster, make
from tests.support.examples import CREDENTIALS_SECRET
from tests.support.modeldeployments import model_deployment

GATEWAY = {"name": "modelplane", "namespace": "modelplane-system"}
TLS_SECRET = "modelplane-gateway-tls"


@pytest.fixture(scope="module")
def gateway_up() -> None:
    make("gateway")  # idempotent: e2e-prerequisites brought it up


def model_md(name: str, model: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A ModelDeployment of MODEL (a spec.model without its credentials) that names the chart's Gateway."""
    model = {**model, "credentialsSecret": CREDENTIALS_SECRET}
    return model_deployment(name, {"model": model, "gateway": GATEWAY, **spec})


def gateway_ca(cluster: Cluster) -> bytes:
    """The Gateway's self-signed certificate (the harness made it; it names the node's address)."""
    secret = cluster.get("secret", TLS_SECRET, GATEWAY["namespace"])
    return base64.b64decode(secret["data"]["tls.crt"])


def post(url: str, body: Any, context: ssl.SSLContext | None = None, timeout: float = 30) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
        return json.loads(response.read())
