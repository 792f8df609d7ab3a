"""Render functions against expected manifests (golden YAML), plus the rules the goldens rely on.

Regenerate the goldens after an intended change with MODELPLANE_UPDATE_GOLDEN=1, then review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import modelplane_contract as contract
import pytest
import yaml
from modelplane import render, spec
from modelplane.consumers import Consumer, Directory
from modelplane.render.common import ANNOTATION_APPLIED_HASH
from modelplane.render.deployment import container_resources
from modelplane.render.settings import RenderSettings

GOLDEN = Path(__file__).parent / "golden"
SETTINGS = render.RenderSettings(
    runtime_image="localhost/modelplane/runtime:test",
    tensorflow_runtime_image="localhost/modelplane/runtime-tensorflow:test",
    vllm_image="localhost/modelplane/runtime-vllm:test",
)
AWS_KEYS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"})
OBSERVATIONS = {
    "sklearn-s3": render.Observations(secret_keys=AWS_KEYS),
    "sklearn-optimize": render.Observations(secret_keys=AWS_KEYS),
    "sklearn-cache": render.Observations(secret_keys=AWS_KEYS),
    "sklearn-cache-optimize": render.Observations(secret_keys=AWS_KEYS),
    "canary-warming": render.Observations(canary_ready=False),
    "canary-ready": render.Observations(canary_ready=True),
    "autoscaling-cpu": render.Observations(),
    "autoscaling-concurrency": render.Observations(
        keda_installed=True, secret_keys=frozenset({"GOOGLE_APPLICATION_CREDENTIALS"})
    ),
    "gpu": render.Observations(),
    "pvc": render.Observations(),
    "gguf": render.Observations(),
    "autoscaling-llm-waiting": render.Observations(keda_installed=True),
    "tensorflow": render.Observations(),
    "gateway-prefix": render.Observations(secret_keys=AWS_KEYS, gateway_api_installed=True),
    "gateway-hostname": render.Observations(secret_keys=AWS_KEYS, gateway_api_installed=True),
    "gateway-canary": render.Observations(canary_ready=True, gateway_api_installed=True),
    "gateway-shadow": render.Observations(gateway_api_installed=True),
    "vllm": render.Observations(keda_installed=True, secret_keys=AWS_KEYS),
    "vllm-gpu": render.Observations(),
    "gateway-scale-to-zero": render.Observations(
        keda_installed=True, gateway_api_installed=True, traffic_policy_installed=True
    ),
    "consumers": render.Observations(
        consumers=Directory(
            "modelplane-consumers",
            (
                Consumer("alice"),
                Consumer("bob", frozenset({"team-a"})),
                Consumer("carol", frozenset({"team-a", "premium"})),
                Consumer("dave"),
            ),
        ),
        security_policy_installed=True,
        traffic_policy_installed=True,
    ),
    "access": render.Observations(),
}


def load(case: str) -> spec.ModelDeployment:
    return spec.parse(yaml.safe_load((GOLDEN / f"{case}.input.yaml").read_text()))


def rendered(case: str) -> list[dict[str, Any]]:
    return render.children(load(case), SETTINGS, OBSERVATIONS[case])


@pytest.mark.parametrize("case", sorted(OBSERVATIONS))
def test_children_match_golden(case: str) -> None:
    expected_path = GOLDEN / f"{case}.children.yaml"
    text = yaml.safe_dump_all(rendered(case), sort_keys=True)
    if os.environ.get("MODELPLANE_UPDATE_GOLDEN"):
        expected_path.write_text(text)
    assert text == expected_path.read_text()


def by_kind(manifests: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m["kind"], m["metadata"]["name"]): m for m in manifests}


def pod_spec(manifests: list[dict[str, Any]], name: str) -> dict[str, Any]:
    result: dict[str, Any] = by_kind(manifests)[("Deployment", name)]["spec"]["template"]["spec"]
    return result


def test_every_child_is_owned_and_labelled() -> None:
    for case in OBSERVATIONS:
        md = load(case)
        for manifest in rendered(case):
            meta = manifest["metadata"]
            assert meta["ownerReferences"] == [
                {
                    "apiVersion": "modelplane.io/v1alpha1",
                    "kind": "ModelDeployment",
                    "name": md.name,
                    "uid": md.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
            assert meta["labels"]["app.kubernetes.io/managed-by"] == "modelplane"
            assert meta["labels"]["modelplane.io/name"] == md.name
            assert meta["namespace"] == md.namespace
            assert len(meta["annotations"][ANNOTATION_APPLIED_HASH]) == 16


def test_a_tensorflow_model_runs_the_tensorflow_variant_unless_its_spec_names_an_image() -> None:
    containers = pod_spec(rendered("tensorflow"), "keras-iris")["containers"]
    assert [c["image"] for c in containers] == ["localhost/modelplane/runtime-tensorflow:test"]
    assert {"name": contract.ENV_MODEL_SIGNATURE, "value": "predict_proba"} in containers[0]["env"]
    without_variant = render.RenderSettings(runtime_image="localhost/modelplane/runtime:test")
    others = pod_spec(
        render.children(load("tensorflow"), without_variant, render.Observations()), "keras-iris"
    )
    assert [c["image"] for c in others["containers"]] == ["localhost/modelplane/runtime:test"]
    assert pod_spec(rendered("sklearn-s3"), "iris")["containers"][0]["image"] == SETTINGS.runtime_image


def test_a_tensorflow_models_optimize_step_runs_in_its_image_on_its_signature() -> None:
    body = yaml.safe_load((GOLDEN / "tensorflow.input.yaml").read_text())
    body["spec"]["model"]["optimize"] = {"onnx": True}
    optimized = spec.parse(body)
    pull, step = pod_spec(render.children(optimized, SETTINGS, OBSERVATIONS["tensorflow"]), "keras-iris")[
        "initContainers"
    ]
    assert step["name"] == contract.OPTIMIZE_CONTAINER_NAME
    assert pull["image"] == step["image"] == SETTINGS.tensorflow_runtime_image
    assert {"name": contract.ENV_MODEL_SIGNATURE, "value": "predict_proba"} in step["env"]
    assert contract.ENV_MODEL_SIGNATURE not in {item["name"] for item in pull["env"]}


def test_pods_are_restricted() -> None:
    pod = pod_spec(rendered("sklearn-s3"), "iris")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"] + pod["initContainers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}


def test_pull_init_container_follows_the_contract() -> None:
    pod = pod_spec(rendered("sklearn-s3"), "iris")
    [pull] = pod["initContainers"]
    env = {item["name"]: item.get("value") for item in pull["env"]}
    assert pull["command"] == [contract.RUNTIME_COMMAND, contract.PULL_SUBCOMMAND]
    assert env[contract.ENV_MODEL_URI] == "s3://models/iris/model.joblib"
    assert env[contract.ENV_MODEL_DIGEST].startswith("sha256:")
    assert env[contract.ENV_MODEL_DIR] == contract.MODEL_DIR
    assert pull["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert pull["terminationMessagePath"] == contract.TERMINATION_LOG
    [server] = pod["containers"]
    assert server["readinessProbe"]["httpGet"]["path"] == contract.READY_PATH
    assert server["livenessProbe"]["httpGet"]["path"] == contract.LIVE_PATH
    assert server["startupProbe"]["httpGet"]["path"] == contract.LIVE_PATH


def test_file_credentials_are_mounted_not_put_in_env() -> None:
    pod = pod_spec(rendered("autoscaling-concurrency"), "busy")
    [pull] = pod["initContainers"]
    env = {item["name"]: item.get("value") for item in pull["env"]}
    assert env["GOOGLE_APPLICATION_CREDENTIALS"].startswith("/var/run/modelplane/credentials/")
    volume = next(v for v in pod["volumes"] if v["name"] == "credentials")
    assert volume["secret"]["items"][0]["key"] == "GOOGLE_APPLICATION_CREDENTIALS"


def test_no_empty_values_that_the_api_server_would_drop() -> None:
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                # An empty volume source or label selector means something (and the API keeps it).
                meaningful = key in ("emptyDir", "namespaceSelector", "podSelector")
                assert value not in ("", [], {}) or meaningful, f"{path}.{key} is empty"
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}[{index}]")

    for case in OBSERVATIONS:
        walk(rendered(case), case)


@pytest.mark.parametrize(
    ("total", "percent", "expected"),
    [(5, 20, 1), (5, 0, 0), (5, 100, 5), (10, 25, 3), (4, 10, 1), (3, 50, 2), (0, 50, 0), (1, 1, 1)],
)
def test_canary_replicas(total: int, percent: int, expected: int) -> None:
    assert render.canary_replicas(total, percent) == expected


def test_stable_track_keeps_its_replicas_until_the_canary_is_ready() -> None:
    warming = by_kind(rendered("canary-warming"))
    ready = by_kind(rendered("canary-ready"))
    assert warming[("Deployment", "iris")]["spec"]["replicas"] == 5
    assert warming[("Deployment", "iris-canary")]["spec"]["replicas"] == 1
    assert ready[("Deployment", "iris")]["spec"]["replicas"] == 4
    assert ready[("Deployment", "iris-canary")]["spec"]["replicas"] == 1
    assert {name for kind, name in ready if kind == "Service"} == {"iris", "iris-stable", "iris-canary"}
    shared = ready[("Service", "iris")]["spec"]["selector"]
    assert shared == {"modelplane.io/name": "iris"}  # both tracks, Ready pods only (Service semantics)


def test_autoscaler_owns_replicas() -> None:
    manifests = by_kind(rendered("autoscaling-cpu"))
    assert "replicas" not in manifests[("Deployment", "xgb")]["spec"]
    hpa = manifests[("HorizontalPodAutoscaler", "xgb")]
    assert hpa["spec"]["metrics"][0]["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 50},
    }
    assert ("PodDisruptionBudget", "xgb") in manifests


def test_scale_down_delay_sets_the_hpa_window_and_kedas_cooldown() -> None:
    hpa = by_kind(rendered("autoscaling-cpu"))[("HorizontalPodAutoscaler", "xgb")]
    assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 300}}  # the default
    scaled = by_kind(rendered("autoscaling-concurrency"))[("ScaledObject", "busy")]["spec"]
    assert scaled["cooldownPeriod"] == 60  # the input's scaleDownDelaySeconds
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior == {"scaleDown": {"stabilizationWindowSeconds": 60}}


def test_scaled_object_queries_the_configured_prometheus() -> None:
    settings = render.RenderSettings(prometheus_url="http://prometheus.observability.svc:9090")
    manifests = by_kind(
        render.children(load("autoscaling-concurrency"), settings, OBSERVATIONS["autoscaling-concurrency"])
    )
    (trigger,) = manifests[("ScaledObject", "busy")]["spec"]["triggers"]
    assert trigger["metadata"]["serverAddress"] == "http://prometheus.observability.svc:9090"


@pytest.mark.parametrize(
    ("metric", "target", "query"),
    [
        ("waitingRequests", 2, 'sum(vllm:num_requests_waiting{namespace="ml",model_name="smollm2"})'),
        ("kvCacheUsage", 70, '100 * sum(vllm:kv_cache_usage_perc{namespace="ml",model_name="smollm2"})'),
        ("concurrency", 4, 'sum(modelplane_requests_in_flight{namespace="ml",model="smollm2"})'),
    ],
)
def test_a_language_model_scales_on_its_engines_vllm_named_metrics(
    metric: str, target: int, query: str
) -> None:
    body = yaml.safe_load((GOLDEN / "autoscaling-llm-waiting.input.yaml").read_text())
    body["spec"]["autoscaling"].update(metric=metric, target=target)
    manifests = by_kind(render.children(spec.parse(body), SETTINGS, render.Observations(keda_installed=True)))
    (trigger,) = manifests[("ScaledObject", "chat")]["spec"]["triggers"]
    assert trigger["metadata"]["query"] == query
    assert trigger["metadata"]["threshold"] == str(target)  # per pod: KEDA's HPA divides the total by it


def test_keda_missing_renders_no_scaled_object_and_runs_the_minimum() -> None:
    md = load("autoscaling-concurrency")
    manifests = by_kind(render.children(md, SETTINGS, render.Observations(keda_installed=False)))
    assert not any(kind == "ScaledObject" for kind, _ in manifests)
    assert manifests[("Deployment", "busy")]["spec"]["replicas"] == 1


def test_stopped_model_has_zero_replicas_and_no_budget() -> None:
    manifests = by_kind(rendered("pvc"))
    assert manifests[("Deployment", "onnx-pvc")]["spec"]["replicas"] == 0
    assert not any(kind == "PodDisruptionBudget" for kind, _ in manifests)


def test_pvc_model_is_mounted_read_only_without_pull() -> None:
    pod = pod_spec(rendered("pvc"), "onnx-pvc")
    assert "initContainers" not in pod
    volume = next(v for v in pod["volumes"] if v["name"] == contract.MODEL_VOLUME_NAME)
    assert volume["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    mount = pod["containers"][0]["volumeMounts"][0]
    assert mount == {
        "name": "model",
        "mountPath": contract.MODEL_DIR,
        "readOnly": True,
        "subPath": "onnx/resnet",
    }


def test_gpu_limits_and_scheduling() -> None:
    pod = pod_spec(rendered("gpu"), "llm")
    server = pod["containers"][0]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in pod["initContainers"][0]["resources"].get("limits", {})
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["serviceAccountName"] == "models"


def test_rendering_is_deterministic() -> None:
    for case in OBSERVATIONS:
        assert rendered(case) == rendered(case)


def _server(manifests: list[dict[str, Any]], name: str) -> tuple[dict[str, Any], dict[str, str]]:
    pod = pod_spec(manifests, name)
    [server] = [c for c in pod["containers"] if c["name"] == contract.SERVER_CONTAINER_NAME]
    return pod, {entry["name"]: entry.get("value", "") for entry in server["env"]}


def test_pods_drain_then_outlast_the_longest_request() -> None:
    """On deletion the runtime drains (endpoints drop the pod while it still serves), then gives
    in-flight requests the whole request timeout; the pod's grace covers both, and the rollout never
    takes a serving pod away before its replacement is Ready."""
    manifests = rendered("sklearn-s3")
    pod, env = _server(manifests, "iris")
    drain, grace = int(env[contract.ENV_DRAIN_SECONDS]), int(env[contract.ENV_SHUTDOWN_GRACE_SECONDS])
    assert drain > 0
    assert grace > int(env[contract.ENV_REQUEST_TIMEOUT_SECONDS])
    assert pod["terminationGracePeriodSeconds"] > drain + grace
    strategy = by_kind(manifests)[("Deployment", "iris")]["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_runtime_env_replaces_a_rendered_variable_and_the_grace_follows() -> None:
    body = yaml.safe_load((GOLDEN / "sklearn-s3.input.yaml").read_text())
    body["spec"]["runtime"] = {
        "requestTimeoutSeconds": 120,
        "env": [{"name": contract.ENV_SHUTDOWN_GRACE_SECONDS, "value": "20"}],
    }
    manifests = render.children(spec.parse(body), SETTINGS, OBSERVATIONS["sklearn-s3"])
    pod, env = _server(manifests, "iris")
    [server] = pod["containers"]
    names = [entry["name"] for entry in server["env"]]
    assert names.count(contract.ENV_SHUTDOWN_GRACE_SECONDS) == 1  # one entry per name, the user's
    assert env[contract.ENV_SHUTDOWN_GRACE_SECONDS] == "20"
    assert pod["terminationGracePeriodSeconds"] == int(env[contract.ENV_DRAIN_SECONDS]) + 20 + 5


@pytest.mark.parametrize(
    ("requests", "limits", "expected"),
    [
        # Nothing named: the operator's defaults.
        (None, None, {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}}),
        # Only a CPU request: memory keeps its default request and limit (not a 2Gi request).
        ({"cpu": "20m"}, None, {"requests": {"cpu": "20m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}}),
        # Memory sized above the default limit: no default memory limit below the request.
        ({"memory": "4Gi"}, None, {"requests": {"cpu": "100m", "memory": "4Gi"}}),
        # A memory limit below the default request: that default goes (Kubernetes requests the limit).
        (None, {"memory": "128Mi"}, {"requests": {"cpu": "100m"}, "limits": {"memory": "128Mi"}}),
        # A memory limit above the default request: both stay (the limit is the spec's).
        (
            None,
            {"memory": "48Gi"},
            {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "48Gi"}},
        ),
        # A CPU limit: the defaults stay.
        (
            None,
            {"cpu": "1"},
            {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
        ),
    ],
)
def test_resources_default_per_resource_the_spec_leaves_alone(
    requests: dict[str, str] | None, limits: dict[str, str] | None, expected: dict[str, Any]
) -> None:
    runtime = spec.Runtime(requests=requests, limits=limits)
    assert container_resources(runtime, RenderSettings(), gpus=False) == expected
