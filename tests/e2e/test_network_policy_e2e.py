"""Network isolation on the local cluster (kube-router enforces NetworkPolicy: make network-policy).

Every check runs from a pod: the node itself is always admitted (the NetworkPolicy API's rule), so a
client on the host proves nothing. Each deny has its positive control: the same pod, or its twin,
gets through once the spec (or its label) says it may. The gateway's real Envoy pods (make gateway)
get through to a model that admits no pod of its own namespace, while the same calling pod is
refused when it skips the gateway.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import modelplane_contract as contract
import pytest

from tests.support.cluster import Cluster, namespace_name, wait_until
from tests.support.examples import credentials_secret
from tests.support.gateway import GATEWAY, envoy_pods, gateway_address, wait_routed
from tests.support.modeldeployments import children, s3_model_deployment, wait_ready
from tests.support.models import SklearnModel
from tests.support.pods import RESTRICTED
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e

# Prints the HTTP status of a GET, or "unreachable: <why>" when no connection is made.
PROBE = """
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=4) as response:
        print(response.status)
except urllib.error.HTTPError as error:
    print(error.code)
except OSError as error:
    print("unreachable:", getattr(error, "reason", error))
"""
# How long a NetworkPolicy change may take to be enforced (kube-router syncs on each change).
ENFORCED_WITHIN = 60.0


@pytest.fixture
def client_namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A second namespace of the test's own, for the calling pods."""
    name = namespace_name(f"{request.node.name}-caller")
    cluster.kubectl("create", "namespace", name)
    cluster.wait("serviceaccount/default", "create", namespace=name, timeout=60)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def iris(model: SklearnModel, access: dict[str, Any] | None = None) -> dict[str, Any]:
    if access is None:
        return s3_model_deployment("iris", model)
    return s3_model_deployment("iris", model, access=access)


def start_caller(cluster: Cluster, namespace: str, name: str, image: str, labels: dict[str, str]) -> None:
    """A pod that idles, so that the test can run probes in it (kubectl exec)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "caller",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-c", "import signal; signal.pause()"],
                    "securityContext": RESTRICTED,
                }
            ],
        },
    }
    cluster.apply(pod, namespace)
    cluster.wait(f"pod/{name}", "condition=Ready", namespace=namespace, timeout=120)


def model_url(cluster: Cluster, namespace: str, path: str) -> str:
    """The model pod's own address (not its Service): the policy guards the pods."""
    [pod] = [p for p in children(cluster, namespace, "iris", "pod") if p["status"].get("podIP")]
    return f"http://{pod['status']['podIP']}:{contract.HTTP_PORT}{path}"


def probe(cluster: Cluster, namespace: str, pod: str, url: str) -> str:
    return cluster.kubectl("exec", "-n", namespace, pod, "--", "python3", "-c", PROBE, url).stdout.strip()


def wait_probe(cluster: Cluster, namespace: str, pod: str, url: str, admitted: bool) -> None:
    """Until the probe from POD answers as the policy now says (enforcement follows a change)."""
    what = f"{namespace}/{pod} {'reaches' if admitted else 'is refused by'} {url}"
    wait_until(
        what,
        lambda: probe(cluster, namespace, pod, url).startswith("200" if admitted else "unreachable:"),
        timeout=ENFORCED_WITHIN,
        interval=0.5,
    )


def test_another_namespace_reaches_the_model_pods_only_once_listed(
    cluster: Cluster,
    namespace: str,
    client_namespace: str,
    operator: Path,
    s3: S3Server,
    iris_models: dict[str, SklearnModel],
    echo_image: str,
) -> None:
    model = iris_models["v1"]
    cluster.apply([credentials_secret(s3), iris(model)], namespace)
    start_caller(cluster, client_namespace, "caller", echo_image, {"app": "caller"})
    start_caller(cluster, namespace, "neighbour", echo_image, {"app": "neighbour"})
    wait_ready(cluster, namespace, "iris")
    assert children(cluster, namespace, "iris", "networkpolicy")
    url = model_url(cluster, namespace, contract.READY_PATH)
    # Without spec.access: the model's own namespace gets through, another namespace is refused.
    wait_probe(cluster, client_namespace, "caller", url, admitted=False)
    assert probe(cluster, namespace, "neighbour", url) == "200"

    # The same pod, once its namespace is listed; the own namespace, no longer implied, is refused.
    cluster.apply(iris(model, {"namespaces": [client_namespace]}), namespace)
    wait_probe(cluster, client_namespace, "caller", url, admitted=True)
    wait_probe(cluster, namespace, "neighbour", url, admitted=False)
    [policy] = children(cluster, namespace, "iris", "networkpolicy")
    [rule] = policy["spec"]["ingress"]
    assert rule["from"][-1]["namespaceSelector"]["matchExpressions"][0]["values"] == [client_namespace]
    wait_ready(cluster, namespace, "iris")  # the probes and the pulls were never cut off


def test_a_pod_labelled_as_prometheus_scrapes_the_model_and_its_unlabelled_twin_is_refused(
    cluster: Cluster,
    namespace: str,
    client_namespace: str,
    operator: Path,
    s3: S3Server,
    iris_models: dict[str, SklearnModel],
    echo_image: str,
) -> None:
    cluster.apply([credentials_secret(s3), iris(iris_models["v1"])], namespace)
    start_caller(
        cluster, client_namespace, "prometheus", echo_image, {"app.kubernetes.io/name": "prometheus"}
    )
    start_caller(cluster, client_namespace, "twin", echo_image, {"app.kubernetes.io/name": "not-prometheus"})
    wait_ready(cluster, namespace, "iris")
    [policy] = children(cluster, namespace, "iris", "networkpolicy")
    # The Prometheus peer's empty namespace selector (every namespace) is kept by the API as written.
    assert {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    } in (policy["spec"]["ingress"][0]["from"])
    url = model_url(cluster, namespace, "/metrics")
    wait_probe(cluster, client_namespace, "twin", url, admitted=False)
    assert probe(cluster, client_namespace, "prometheus", url) == "200"


def test_the_gateways_envoy_pods_reach_a_model_whose_own_namespace_is_refused(
    cluster: Cluster,
    namespace: str,
    operator: Path,
    gateway_up: None,
    s3: S3Server,
    iris_models: dict[str, SklearnModel],
    echo_image: str,
) -> None:
    # spec.access {}: the gateway and Prometheus only (what spec.access.consumers alone admits too).
    model = iris_models["v1"]
    cluster.apply(
        [credentials_secret(s3), s3_model_deployment("iris", model, gateway=GATEWAY, access={})], namespace
    )
    start_caller(cluster, namespace, "neighbour", echo_image, {"app": "neighbour"})
    obj = wait_ready(cluster, namespace, "iris")
    # The Envoy pods are on the pod network, not the node's (which every policy admits).
    assert not any(pod["spec"].get("hostNetwork") for pod in envoy_pods(cluster))

    direct = model_url(cluster, namespace, contract.READY_PATH)
    wait_probe(cluster, namespace, "neighbour", direct, admitted=False)
    # From the host through Envoy (status.url's HTTP twin), then the refused pod through the gateway.
    plain = f"http://{gateway_address(cluster)}/{namespace}/iris"
    assert obj["status"]["url"].endswith(f"/{namespace}/iris")
    wait_routed(plain)
    assert probe(cluster, namespace, "neighbour", f"{plain}{contract.READY_PATH}") == "200"
    assert probe(cluster, namespace, "neighbour", direct).startswith("unreachable:")


@pytest.mark.parametrize(
    ("access", "field"),
    [
        ({"namespaces": ["Team_B"]}, "spec.access.namespaces"),
        (
            {"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In"}]}},
            "spec.access.podSelector",
        ),
        (
            {"podSelector": {"matchExpressions": [{"key": "tier", "operator": "Is"}]}},
            "spec.access.podSelector",
        ),
    ],
)
def test_bad_access_is_refused_at_apply_time_naming_the_field(
    cluster: Cluster, namespace: str, access: dict[str, Any], field: str
) -> None:
    body = {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "bad"},
        "spec": {"model": {"uri": "s3://b/k", "format": "sklearn"}, "access": access},
    }
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=False)
    assert result.returncode != 0
    assert field in result.stderr, result.stderr
