"""Every example in examples/, from `helm install` to a prediction: the chart installed once for the module
(the operator image `make images` built), the models put where the examples name them (S3, the HTTP
server on the node, a PersistentVolumeClaim), each example applied as the file is (only the S3
credentials and the digests put in, as hack/demo.sh does) in a namespace of its own, Ready, and a
correct prediction through its Service. The GPU one stays Pending here and its status says why."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.chart.conftest import host_operator_stopped, install, release_values
from tests.support.cluster import Cluster, make, namespace_name, wait_until
from tests.support.examples import (
    CREDENTIALS_SECRET,
    credentials_secret,
    example,
    example_names,
    pin_digests,
    with_local_credentials,
)
from tests.support.helm import Helm
from tests.support.modeldeployments import (
    assert_waits_for_a_gpu,
    children,
    condition,
    predict_v1,
    request_json,
    service_url,
    wait_ready,
    wait_service,
)
from tests.support.models import OnnxModel, SklearnModel, XGBoostModel
from tests.support.pods import pull_pod
from tests.support.s3 import S3Server

pytestmark = [pytest.mark.e2e, pytest.mark.exclusive]  # the chart's operator in place of the host one

FIELD_MANAGER = "modelplane-examples-test"
# The examples tested below, one test each.
TESTED = {
    "autoscaling-cpu.yaml",
    "canary.yaml",
    "gpu.yaml",
    "onnx-pvc.yaml",
    "sklearn-s3.yaml",
    "xgboost-http.yaml",
}


@dataclass(frozen=True)
class Release:
    """The chart's release: its namespace, the runtime image it defaults to, the namespace of each example."""

    name: str
    namespace: str
    runtime_image: str
    namespaces: dict[str, str]


@pytest.fixture(scope="module")
def release(cluster: Cluster, helm_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    """The chart installed once, watching one namespace per example. The host operator (`make operator-up`
    watches every namespace) is stopped meanwhile, so that what reconciles the examples is the chart's
    operator, and started again after."""
    make("install-crds")  # crds.enabled=false: the CRDs are cluster-wide and other tests use them too
    workdir = tmp_path_factory.mktemp("examples-release")
    helm = Helm(helm_bin, workdir, cluster.kubeconfig)
    operator_namespace = namespace_name("examples-operator")
    namespaces = {name: namespace_name(f"example-{Path(name).stem}") for name in example_names()}
    values = release_values(sorted(namespaces.values()), FIELD_MANAGER)
    release = Release(
        name=f"mp-{operator_namespace.rsplit('-', 1)[-1]}",  # its CRD-reading ClusterRole is cluster-wide
        namespace=operator_namespace,
        runtime_image=values["runtime"]["image"],
        namespaces=namespaces,
    )
    with host_operator_stopped():
        try:
            for namespace in (operator_namespace, *release.namespaces.values()):
                cluster.kubectl("create", "namespace", namespace)
                cluster.wait("serviceaccount/default", "create", namespace=namespace, timeout=60)
            install(helm, release.name, operator_namespace, values, workdir, "--wait", "--timeout", "5m")
            yield release
        finally:
            for namespace in release.namespaces.values():
                cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
            helm.run("uninstall", release.name, "-n", operator_namespace, "--wait", check=False)
            cluster.kubectl("delete", "namespace", operator_namespace, "--wait=false", check=False)


@pytest.fixture
def namespace_of(release: Release, cluster: Cluster) -> Iterator[Callable[[str], str]]:
    """The namespace of an example; its ModelDeployments are deleted after the test, so that the one node's
    CPU goes to the next example (the namespace itself goes with the module)."""
    used: list[str] = []

    def take(example_name: str) -> str:
        used.append(release.namespaces[example_name])
        return used[-1]

    yield take
    for namespace in used:
        cluster.kubectl("delete", "modeldeployments", "--all", "-n", namespace, "--wait=false", check=False)


def assert_reconciled_by_the_chart(cluster: Cluster, namespace: str, name: str) -> None:
    """The model's Deployment and status were written by the chart's operator (its field manager)."""
    for kind, subresource in (("deployment", ""), ("modeldeployment", "status")):
        obj = json.loads(
            cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", "--show-managed-fields").stdout
        )
        managers = {(e["manager"], e.get("subresource", "")) for e in obj["metadata"]["managedFields"]}
        assert (FIELD_MANAGER, subresource) in managers, managers


def metadata_digest(cluster: Cluster, namespace: str, service: str, model: str) -> str:
    """The digest the runtime behind SERVICE reports for its model (pinned or verified by its pull)."""
    meta = request_json(f"{service_url(cluster, namespace, service)}/v2/models/{model}")
    digest: str = meta["parameters"]["digest"]
    return digest


def test_every_example_is_tested_here() -> None:
    """A new example gets its test below (tests/operator/test_cli_config.py checks it renders)."""
    assert set(example_names()) == TESTED


def test_sklearn_from_s3(
    cluster: Cluster,
    namespace_of: Callable[[str], str],
    s3: S3Server,
    iris_models: dict[str, SklearnModel],
) -> None:
    namespace, v1 = namespace_of("sklearn-s3.yaml"), iris_models["v1"]
    docs = with_local_credentials(example("sklearn-s3.yaml"), s3)
    cluster.apply(pin_digests(docs, {v1.uri: v1.digest}), namespace)

    obj = wait_ready(cluster, namespace, "iris")
    assert obj["status"]["url"] == f"http://iris.{namespace}.svc.cluster.local"
    assert_reconciled_by_the_chart(cluster, namespace, "iris")
    wait_service(cluster, namespace, "iris")
    assert predict_v1(cluster, namespace, "iris", "iris", v1.sample) == v1.expected()
    assert metadata_digest(cluster, namespace, "iris", "iris") == v1.digest


def test_xgboost_over_http(
    cluster: Cluster, namespace_of: Callable[[str], str], xgboost_model: XGBoostModel
) -> None:
    namespace = namespace_of("xgboost-http.yaml")
    cluster.apply(example("xgboost-http.yaml"), namespace)

    wait_ready(cluster, namespace, "xgboost-http")
    assert_reconciled_by_the_chart(cluster, namespace, "xgboost-http")
    wait_service(cluster, namespace, "xgboost-http")
    expected = xgboost_model.expected()
    v1 = predict_v1(cluster, namespace, "xgboost-http", "xgboost-http", xgboost_model.sample)
    assert np.allclose(v1, expected, atol=1e-5), v1
    # The same rows over the Open Inference Protocol (v2 REST), which the example also serves.
    rows = np.array(xgboost_model.sample)
    answer = request_json(
        f"{service_url(cluster, namespace, 'xgboost-http')}/v2/models/xgboost-http/infer",
        {
            "inputs": [
                {"name": "x", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}
            ]
        },
    )
    (output,) = answer["outputs"]
    assert np.allclose(np.reshape(output["data"], output["shape"]), expected, atol=1e-5), output


def loader_pod(image: str, claim: str, model: OnnxModel, dest: str) -> dict[str, Any]:
    """A pod that puts MODEL onto CLAIM at DEST with the runtime's own pull (digest verified), then ends:
    what the example's comment tells users to do."""
    return pull_pod(
        "fill-onnx-models",
        image,
        model.uri,
        {"persistentVolumeClaim": {"claimName": claim}},
        digest=model.digest,
        model_dir="/models",
        dest=f"/models/{dest}",
        env_from=[{"secretRef": {"name": CREDENTIALS_SECRET}}],
    )


def pod_phase(cluster: Cluster, namespace: str, name: str) -> str:
    phase: str = cluster.get("pod", name, namespace).get("status", {}).get("phase", "")
    return phase


def test_onnx_from_a_persistent_volume_claim(
    cluster: Cluster,
    release: Release,
    namespace_of: Callable[[str], str],
    s3: S3Server,
    onnx_model: OnnxModel,
) -> None:
    namespace = namespace_of("onnx-pvc.yaml")
    docs = example("onnx-pvc.yaml")
    (claim,) = [doc for doc in docs if doc["kind"] == "PersistentVolumeClaim"]
    (md_doc,) = [doc for doc in docs if doc["kind"] == "ModelDeployment"]
    claim_name, _, path = md_doc["spec"]["model"]["uri"].removeprefix("pvc://").partition("/")
    assert claim_name == claim["metadata"]["name"]

    # The claim first, filled from S3 by a pod that ends; then the whole file.
    cluster.apply([claim, credentials_secret(s3)], namespace)
    pod = loader_pod(release.runtime_image, claim_name, onnx_model, path)
    cluster.apply(pod, namespace)
    phase = wait_until(
        "the pod filling the claim to end",
        lambda: (p := pod_phase(cluster, namespace, "fill-onnx-models")) in ("Succeeded", "Failed") and p,
        timeout=180,
    )
    logs = cluster.kubectl("logs", "fill-onnx-models", "-n", namespace, check=False).stdout
    assert phase == "Succeeded", logs
    cluster.kubectl("delete", "pod", "fill-onnx-models", "-n", namespace, "--wait=true")
    cluster.apply(docs, namespace)

    wait_ready(cluster, namespace, "onnx-pvc")
    assert_reconciled_by_the_chart(cluster, namespace, "onnx-pvc")
    [deployment] = children(cluster, namespace, "onnx-pvc", "deployment")
    pod_spec = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in pod_spec  # mounted, not pulled
    assert {"claimName": claim_name, "readOnly": True} in [
        v.get("persistentVolumeClaim") for v in pod_spec["volumes"]
    ]
    wait_service(cluster, namespace, "onnx-pvc")
    assert predict_v1(cluster, namespace, "onnx-pvc", "onnx-pvc", onnx_model.sample) == onnx_model.expected()
    # What the loader verified and recorded beside the model on the claim is what is served.
    assert metadata_digest(cluster, namespace, "onnx-pvc", "onnx-pvc") == onnx_model.digest


def test_canary_serves_both_versions_and_status_shows_the_canary(
    cluster: Cluster,
    namespace_of: Callable[[str], str],
    s3: S3Server,
    iris_models: dict[str, SklearnModel],
) -> None:
    namespace = namespace_of("canary.yaml")
    v1, v2 = iris_models["v1"], iris_models["v2"]
    docs = pin_digests(example("canary.yaml"), {v1.uri: v1.digest, v2.uri: v2.digest})
    cluster.apply([credentials_secret(s3), *docs], namespace)

    status = wait_ready(cluster, namespace, "iris-canary", timeout=420)["status"]
    assert_reconciled_by_the_chart(cluster, namespace, "iris-canary")
    assert {k: status["canary"][k] for k in ("uri", "digest", "version", "readyReplicas")} == {
        "uri": v2.uri,
        "digest": v2.digest,
        "version": "2",
        "readyReplicas": 1,
    }
    assert (status["stable"]["version"], status["stable"]["readyReplicas"]) == ("1", 4)
    # Each track's own Service answers with its own model.
    for service in ("iris-canary-stable", "iris-canary-canary", "iris-canary"):
        wait_service(cluster, namespace, service)
    assert predict_v1(cluster, namespace, "iris-canary-stable", "iris-canary", v1.sample) == v1.expected()
    assert predict_v1(cluster, namespace, "iris-canary-canary", "iris-canary", v2.sample) == v2.expected()
    # The model's Service spreads requests over both tracks' pods (1 in 5 is the canary's): both
    # versions answer there, told apart by the digest each reports.
    seen: set[str] = set()

    def both_answered() -> bool:
        seen.add(metadata_digest(cluster, namespace, "iris-canary", "iris-canary"))
        return seen == {v1.digest, v2.digest}

    wait_until(
        "both versions to answer through the iris-canary Service", both_answered, timeout=60, interval=0.05
    )


def test_cpu_autoscaling_has_an_hpa_reading_cpu(
    cluster: Cluster,
    namespace_of: Callable[[str], str],
    s3: S3Server,
    iris_models: dict[str, SklearnModel],
) -> None:
    make("addons")  # metrics-server (idempotent)
    namespace, v1 = namespace_of("autoscaling-cpu.yaml"), iris_models["v1"]
    docs = pin_digests(example("autoscaling-cpu.yaml"), {v1.uri: v1.digest})
    cluster.apply([credentials_secret(s3), *docs], namespace)

    wait_ready(cluster, namespace, "iris-autoscaled")
    assert_reconciled_by_the_chart(cluster, namespace, "iris-autoscaled")
    wait_service(cluster, namespace, "iris-autoscaled")
    assert predict_v1(cluster, namespace, "iris-autoscaled", "iris-autoscaled", v1.sample) == v1.expected()
    [hpa] = children(cluster, namespace, "iris-autoscaled", "hpa")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"

    def reading_cpu() -> dict[str, Any] | None:
        status = cluster.get("hpa", hpa["metadata"]["name"], namespace)["status"]
        active = condition({"status": status}, "ScalingActive")
        current = status.get("currentMetrics") or [{}]
        utilization = (current[0].get("resource") or {}).get("current", {}).get("averageUtilization")
        ok = active.get("reason") == "ValidMetricFound" and isinstance(utilization, int)
        return status if ok else None

    # metrics-server reports the pod's CPU a scrape or two after it starts.
    status = wait_until("the HPA to read the pods' CPU from metrics-server", reading_cpu, timeout=180)
    assert status["currentMetrics"][0]["resource"]["name"] == "cpu"


def test_gpu_model_stays_pending_and_says_why(
    cluster: Cluster, namespace_of: Callable[[str], str], s3: S3Server
) -> None:
    namespace = namespace_of("gpu.yaml")
    cluster.apply([credentials_secret(s3), *example("gpu.yaml")], namespace)
    assert_waits_for_a_gpu(cluster, namespace, "gpu-model")
    assert_reconciled_by_the_chart(cluster, namespace, "gpu-model")
