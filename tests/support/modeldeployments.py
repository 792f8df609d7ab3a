"""A ModelDeployment on the local cluster: built for `kubectl apply`, read (its conditions, its children),
waited on in its own state (never a bare sleep), and asked through its Service's ClusterIP (kube-proxy's
rules reach it from the host)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import modelplane_contract as contract

from tests.support.cluster import Cluster, wait_until
from tests.support.examples import CREDENTIALS_SECRET
from tests.support.models import S3Model

API_VERSION = "modelplane.io/v1alpha1"


def model_deployment(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A ModelDeployment named NAME with SPEC, as `kubectl apply` takes it (the namespace given there)."""
    return {"apiVersion": API_VERSION, "kind": "ModelDeployment", "metadata": {"name": name}, "spec": spec}


def s3_model_spec(model: S3Model) -> dict[str, Any]:
    """spec.model for MODEL in the S3 server: pinned by its digest, read with the examples' credentials."""
    return {
        "uri": model.uri,
        "format": model.format,
        "digest": model.digest,
        "credentialsSecret": CREDENTIALS_SECRET,
    }


def s3_model_deployment(name: str, model: S3Model, replicas: int = 1, **spec: Any) -> dict[str, Any]:
    """A ModelDeployment serving MODEL from the S3 server, with SPEC's other fields."""
    return model_deployment(name, {"model": s3_model_spec(model), "replicas": replicas, **spec})


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
        return wait_until(f"md/{name} Ready", ready, timeout=timeout)
    except AssertionError:
        # What a failed wait leaves in the test report: the objects and the status that did not converge.
        print(cluster.kubectl("get", "md,deploy,pods", "-n", namespace, "-o", "wide", check=False).stdout)  # noqa: T201
        print(json.dumps(md(cluster, namespace, name).get("status"), indent=1))  # noqa: T201
        raise


def wait_reason(
    cluster: Cluster, namespace: str, name: str, reasons: set[str], timeout: float = 180
) -> dict[str, Any]:
    def reason() -> dict[str, Any] | None:
        obj = md(cluster, namespace, name)
        return obj if condition(obj, "Ready").get("reason") in reasons else None

    return wait_until(f"md/{name} Ready reason in {reasons}", reason, timeout=timeout)


def children(cluster: Cluster, namespace: str, name: str, kind: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", kind, "-n", namespace, "-l", f"modelplane.io/name={name}", "-o", "json"
    ).stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def serving_pods(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    """The model's own pods (not its caches' fill pods), those not terminating."""
    return [
        p for p in children(cluster, namespace, name, "pod") if not p["metadata"].get("deletionTimestamp")
    ]


def assert_no_pull_of_their_own(pods: list[dict[str, Any]], claim: str, replicas: int) -> None:
    """REPLICAS pods, each mounting the model cache CLAIM read-only, with no init container (no pull,
    no optimize step): the cache's fill Job did both."""
    assert len(pods) == replicas, [p["metadata"]["name"] for p in pods]
    for pod in pods:
        assert not pod["spec"].get("initContainers"), pod["spec"].get("initContainers")
        assert not pod["status"].get("initContainerStatuses"), pod["status"]
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes[contract.MODEL_VOLUME_NAME]["persistentVolumeClaim"] == {
            "claimName": claim,
            "readOnly": True,
        }


def service_url(cluster: Cluster, namespace: str, service: str) -> str:
    return f"http://{cluster.get('service', service, namespace)['spec']['clusterIP']}"


# A new Service's rules reach kube-proxy a moment after its first pods are Ready: until then its
# ClusterIP refuses connections. The wait for that is the one place that retries a failed connection;
# every other request must succeed at once (pods ending drain first: see the runtime's --drain-seconds).
SERVICE_RULES_TIMEOUT = 60.0


def wait_service(cluster: Cluster, namespace: str, service: str, path: str = contract.READY_PATH) -> None:
    """Until a new Service answers its readiness (PATH: vLLM's is /health) through the ClusterIP;
    failed connections are retried."""
    url = f"{service_url(cluster, namespace, service)}{path}"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError:
            raise
        except urllib.error.URLError as error:  # raised only while connecting and sending
            if isinstance(error.reason, OSError):
                return False
            raise

    wait_until(f"Service {service} to accept connections", answers, SERVICE_RULES_TIMEOUT, interval=0.5)


def request_json(url: str, body: Any | None = None, headers: dict[str, str] | None = None) -> Any:
    """GET (or POST BODY as JSON to) URL; the decoded answer. Nothing is retried: a refused or reset
    connection, like an HTTP error, fails the caller (after a new Service, call wait_service first)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def predict_v1(
    cluster: Cluster,
    namespace: str,
    service: str,
    model: str,
    instances: list[Any],
    headers: dict[str, str] | None = None,
) -> list[Any]:
    """A v1 prediction through the Service's ClusterIP."""
    url = f"{service_url(cluster, namespace, service)}/v1/models/{model}:predict"
    predictions: list[Any] = request_json(url, {"instances": instances}, headers)["predictions"]
    return predictions


def assert_waits_for_a_gpu(cluster: Cluster, namespace: str, name: str) -> None:
    """On a node without GPUs the model stays Pending, and its Ready condition says why, naming the
    resource it cannot get."""
    obj = wait_reason(cluster, namespace, name, {"Unschedulable"}, timeout=90)
    ready = condition(obj, "Ready")
    assert ready["status"] == "False", ready
    assert "nvidia.com/gpu" in ready["message"], ready
    pods = children(cluster, namespace, name, "pod")
    assert pods
    assert all(pod["status"]["phase"] == "Pending" for pod in pods), [pod["status"] for pod in pods]
