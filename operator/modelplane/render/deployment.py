"""The Deployment of one track: the runtime image, the pull init container and the model server."""

from __future__ import annotations

import math
from typing import Any, Final

import modelplane_contract as contract

from modelplane import spec as specs
from modelplane.render import vllm
from modelplane.render.common import (
    SHADOW,
    Manifest,
    cache_name,
    metadata,
    non_empty,
    pod_labels,
    quantity,
    selector,
    stamp,
    track_name,
)
from modelplane.render.settings import RenderSettings

CREDENTIALS_VOLUME: Final = "credentials"
CREDENTIALS_DIR: Final = "/var/run/modelplane/credentials"
# Credential keys whose value is a file's content: mounted as a file, the variable set to its path.
FILE_CREDENTIAL_KEYS: Final = {
    "GOOGLE_APPLICATION_CREDENTIALS": "google-application-credentials.json",
    "AWS_CA_BUNDLE": "aws-ca-bundle.pem",
}
GPU_RESOURCE: Final = "nvidia.com/gpu"
PVC_VOLUME: Final = "model-pvc"
# After SIGTERM the runtime serves on this long, readiness failing and each answer closing its
# connection, while the endpoints controller and kube-proxy drop the pod (about a second on a quiet
# cluster; kept-alive clients move on at their next request); only then does it refuse connections.
DRAIN_SECONDS: Final = 5
# Beyond the drain and the longest request: the supervisor's own exit after its workers'.
EXIT_MARGIN_SECONDS: Final = 5


def deployment(
    md: specs.ModelDeployment,
    model: specs.Model,
    track: str,
    replicas: int | None,
    settings: RenderSettings,
    secret_keys: frozenset[str] = frozenset(),
) -> Manifest:
    """The Deployment serving ``model`` on ``track``; ``replicas`` None leaves them to an autoscaler."""
    template_labels = {**md.pod_labels, **pod_labels(md, track)}
    annotations = {
        **md.pod_annotations,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(contract.HTTP_PORT),
        "prometheus.io/path": contract.METRICS_PATH,
    }
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(md, track)},
        "revisionHistoryLimit": 3,
        # A new pod must be Ready before an old one goes: a model never stops serving while rolling.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": {
            "metadata": {"labels": template_labels, "annotations": annotations},
            "spec": _pod_spec(md, model, settings, secret_keys, track),
        },
    }
    if replicas is not None:
        spec = {"replicas": replicas, **spec}
    return stamp(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(md, track_name(md, track), track),
            "spec": spec,
        }
    )


def _pod_spec(
    md: specs.ModelDeployment,
    model: specs.Model,
    settings: RenderSettings,
    secret_keys: frozenset[str],
    track: str,
) -> dict[str, Any]:
    runtime = md.runtime
    on_vllm = _on_vllm(runtime)
    image = runtime.image or (settings.vllm_image if on_vllm else settings.image_for(model.format))
    volumes: list[dict[str, Any]] = [{"name": contract.TMP_VOLUME_NAME, "emptyDir": {}}]
    server_mounts: list[dict[str, Any]] = [
        {"name": contract.MODEL_VOLUME_NAME, "mountPath": contract.MODEL_DIR, "readOnly": True},
        {"name": contract.TMP_VOLUME_NAME, "mountPath": contract.TMP_DIR},
    ]
    init_containers = []
    pvc = model.pvc
    cache = cache_name(md, model)
    if pvc is not None:
        claim, path = pvc
        volumes.append(
            {
                "name": contract.MODEL_VOLUME_NAME,
                "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
            }
        )
        server_mounts[0]["subPath"] = path.strip("/")
    elif cache is not None:
        # Filled once per digest by the cache's Job (render/cache.py), and optimized there with
        # spec.model.optimize: no pull or optimize step of the pod's own. The server checks the claim's
        # pull record against the pinned digest as it loads, and serves what the step's record says.
        volumes.append(
            {
                "name": contract.MODEL_VOLUME_NAME,
                "persistentVolumeClaim": {"claimName": cache, "readOnly": True},
            }
        )
    else:
        volumes.append({"name": contract.MODEL_VOLUME_NAME, "emptyDir": {}})
        pull = pull_container(model, pull_image(md, model, settings), runtime, settings, secret_keys)
        init_containers.append(pull)
        if model.optimize is not None:
            init_containers.append(optimize_container(pull, model, model.optimize))
        volumes.extend(credentials_volumes(model, secret_keys))
    ports = [{"name": contract.HTTP_PORT_NAME, "containerPort": contract.HTTP_PORT, "protocol": "TCP"}]
    if contract.PROTOCOL_GRPC in runtime.protocols:
        ports.append(
            {"name": contract.GRPC_PORT_NAME, "containerPort": contract.GRPC_PORT, "protocol": "TCP"}
        )
    server = {
        "name": contract.SERVER_CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": [contract.RUNTIME_COMMAND, contract.SERVE_SUBCOMMAND],
        **non_empty({"args": list(runtime.args)}),
        "env": _with_user_env(_server_env(md, model, track), runtime.env),
        "ports": ports,
        "startupProbe": _probe(contract.LIVE_PATH, period=2, failures=150),
        "readinessProbe": _probe(contract.READY_PATH, period=3, failures=2),
        "livenessProbe": _probe(contract.LIVE_PATH, period=10, failures=3),
        "resources": container_resources(runtime, settings, gpus=True),
        "securityContext": container_security(),
        "volumeMounts": server_mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if on_vllm:
        server.pop("args", None)
        server.update(
            {
                "command": vllm.command(md, model),
                "env": _with_user_env(
                    [*_revision_env(model), *(_env(name, value) for name, value in vllm.env(md))], runtime.env
                ),
                **vllm.probes(md, model),
                # vLLM stops at once on SIGTERM: it serves on while the endpoints drop the pod.
                "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
            }
        )
        server_mounts.append({"name": vllm.SHM_VOLUME, "mountPath": vllm.SHM_DIR})
        volumes.append(vllm.shm_volume())
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(settings),
        **non_empty(
            {
                "serviceAccountName": md.service_account_name,
                "initContainers": init_containers,
                "nodeSelector": dict(runtime.node_selector),
                "tolerations": [toleration_of(t) for t in runtime.tolerations],
            }
        ),
        "containers": [server],
        "volumes": volumes,
        # Long enough for the drain and then the longest request (or stream) to finish.
        "terminationGracePeriodSeconds": _termination_grace(runtime),
    }
    return pod


def _on_vllm(runtime: specs.Runtime) -> bool:
    return runtime.llm is not None and runtime.llm.engine == specs.LLM_ENGINE_VLLM


def pull_image(md: specs.ModelDeployment, model: specs.Model, settings: RenderSettings) -> str:
    """The image whose `pull` fetches MODEL: the server's, except on vLLM, where spec.runtime.image
    names vLLM's image and the pull is always the runtime image's."""
    if _on_vllm(md.runtime):
        return settings.runtime_image
    return md.runtime.image or settings.image_for(model.format)


def pod_security(settings: RenderSettings) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": settings.run_as_user,
        "runAsGroup": settings.run_as_user,
        "fsGroup": settings.run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def credentials_volumes(model: specs.Model, secret_keys: frozenset[str]) -> list[dict[str, Any]]:
    """The credentials Secret's file-valued keys as a volume, for the pull (none when it has none)."""
    keys = sorted(secret_keys & FILE_CREDENTIAL_KEYS.keys())
    if not keys:
        return []
    assert model.credentials_secret is not None
    items = [{"key": key, "path": FILE_CREDENTIAL_KEYS[key]} for key in keys]
    return [{"name": CREDENTIALS_VOLUME, "secret": {"secretName": model.credentials_secret, "items": items}}]


def _shutdown_grace(runtime: specs.Runtime) -> int:
    """Seconds the runtime gives in-flight requests once it stops accepting: a request started
    just before may take the whole request timeout."""
    return runtime.request_timeout_seconds + 1


def _termination_grace(runtime: specs.Runtime) -> int:
    """The drain, then the in-flight requests' time, as the runtime will have them (spec.runtime.env
    may set either), then the supervisor's exit."""
    user_env = dict(runtime.env)
    seconds = 0
    for name, rendered in (
        (contract.ENV_DRAIN_SECONDS, DRAIN_SECONDS),
        (contract.ENV_SHUTDOWN_GRACE_SECONDS, _shutdown_grace(runtime)),
    ):
        try:
            seconds += math.ceil(float(user_env.get(name, rendered)))
        except ValueError:  # the runtime refuses it at start, saying which variable
            seconds += rendered
    return seconds + EXIT_MARGIN_SECONDS


def _with_user_env(rendered: list[dict[str, str]], user: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    """The rendered variables, each replaced by spec.runtime.env's when it names the same one (a
    container's env is keyed by name: two entries of one name would be refused)."""
    names = {name for name, _ in user}
    return [entry for entry in rendered if entry["name"] not in names] + [_env(n, v) for n, v in user]


def pull_container(
    model: specs.Model,
    image: str,
    runtime: specs.Runtime,
    settings: RenderSettings,
    secret_keys: frozenset[str],
) -> dict[str, Any]:
    env = [
        _env(contract.ENV_MODEL_URI, model.uri),
        _env(contract.ENV_MODEL_DIR, contract.MODEL_DIR),
        _env(contract.ENV_MODEL_FORMAT, model.format),
        _env(contract.ENV_ALLOW_PICKLE, _bool(model.allow_pickle)),
    ]
    if model.digest:
        env.append(_env(contract.ENV_MODEL_DIGEST, model.digest))
    mounts: list[dict[str, Any]] = [
        {"name": contract.MODEL_VOLUME_NAME, "mountPath": contract.MODEL_DIR},
        {"name": contract.TMP_VOLUME_NAME, "mountPath": contract.TMP_DIR},
    ]
    container: dict[str, Any] = {
        "name": contract.PULL_CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": [contract.RUNTIME_COMMAND, contract.PULL_SUBCOMMAND],
    }
    if model.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": model.credentials_secret}}]
        env.extend(
            _env(key, f"{CREDENTIALS_DIR}/{FILE_CREDENTIAL_KEYS[key]}")
            for key in sorted(secret_keys & FILE_CREDENTIAL_KEYS.keys())
        )
        if secret_keys & FILE_CREDENTIAL_KEYS.keys():
            mounts.append({"name": CREDENTIALS_VOLUME, "mountPath": CREDENTIALS_DIR, "readOnly": True})
    container.update(
        {
            "env": env,
            "resources": container_resources(runtime, settings, gpus=False),
            "securityContext": container_security(),
            "volumeMounts": mounts,
            # The pull writes its one-line failure there; status reads it from the container state.
            "terminationMessagePath": contract.TERMINATION_LOG,
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }
    )
    return container


def optimize_container(pull: dict[str, Any], model: specs.Model, optimize: specs.Optimize) -> dict[str, Any]:
    """After the pull, on the same volume (the pod's own, or a model cache's claim in its fill Job):
    the optimize step, with the pull's credentials (it keeps its result beside the artifact in the
    store) and its termination message read by status; it converts the SavedModel signature the
    server serves."""
    env = [*pull["env"], _env(contract.ENV_OPTIMIZE, optimize.as_json())]
    if model.signature:
        env.append(_env(contract.ENV_MODEL_SIGNATURE, model.signature))
    return {
        **pull,
        "name": contract.OPTIMIZE_CONTAINER_NAME,
        "command": [contract.RUNTIME_COMMAND, contract.OPTIMIZE_SUBCOMMAND],
        "env": env,
    }


def _revision_env(model: specs.Model) -> list[dict[str, str]]:
    """What marks a server container as the current revision of its track: status reads the model's
    URI and digest (and optimize) from it (status._runs_model). vLLM does not read them; the runtime's
    server (_server_env) sets the same variables among its own."""
    env = [_env(contract.ENV_MODEL_URI, model.uri)]
    if model.digest:
        env.append(_env(contract.ENV_MODEL_DIGEST, model.digest))
    if model.optimize is not None:
        env.append(_env(contract.ENV_OPTIMIZE, model.optimize.as_json()))
    return env


def _server_env(md: specs.ModelDeployment, model: specs.Model, track: str) -> list[dict[str, str]]:
    runtime = md.runtime
    env = [
        _env(contract.ENV_MODEL_URI, model.uri),
        _env(contract.ENV_MODEL_DIR, contract.MODEL_DIR),
        _env(contract.ENV_MODEL_FORMAT, model.format),
        _env(contract.ENV_MODEL_NAME, model.name or md.name),
        _env(contract.ENV_ALLOW_PICKLE, _bool(model.allow_pickle)),
        _env(contract.ENV_HTTP_PORT, str(contract.HTTP_PORT)),
        _env(contract.ENV_GRPC_PORT, str(contract.GRPC_PORT)),
        _env(contract.ENV_PROTOCOLS, ",".join(runtime.protocols)),
        _env(contract.ENV_WORKERS, str(runtime.workers)),
        _env(contract.ENV_REQUEST_TIMEOUT_SECONDS, str(runtime.request_timeout_seconds)),
        _env(contract.ENV_DRAIN_SECONDS, str(DRAIN_SECONDS)),
        _env(contract.ENV_SHUTDOWN_GRACE_SECONDS, str(_shutdown_grace(runtime))),
        _env(contract.ENV_BATCHING, _bool(runtime.batching is not None)),
    ]
    if model.digest:
        env.append(_env(contract.ENV_MODEL_DIGEST, model.digest))
    if model.optimize is not None:
        # serve follows the step's record, not this; it marks the pods of this optimize revision.
        env.append(_env(contract.ENV_OPTIMIZE, model.optimize.as_json()))
    if runtime.llm is not None:
        env.append(_env(contract.ENV_CONTEXT_LENGTH, str(runtime.llm.context_length)))
        env.append(_env(contract.ENV_MAX_SEQUENCES, str(runtime.llm.max_sequences)))
        env.append(_env(contract.ENV_ENGINE_THREADS, str(runtime.llm.threads)))
    if model.version:
        env.append(_env(contract.ENV_MODEL_VERSION, model.version))
    if model.signature:
        env.append(_env(contract.ENV_MODEL_SIGNATURE, model.signature))
    if runtime.batching is not None:
        env.append(_env(contract.ENV_MAX_BATCH_SIZE, str(runtime.batching.max_batch_size)))
        env.append(_env(contract.ENV_MAX_LATENCY_MS, str(runtime.batching.max_latency_ms)))
    if track == SHADOW:  # its copies of live requests are never billed to a consumer
        env.append(_env(contract.ENV_USAGE, "false"))
    return env


def _env(name: str, value: str) -> dict[str, str]:
    # An empty value is dropped by the API server (omitempty); render it the same way.
    return {"name": name, "value": value} if value else {"name": name}


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": contract.HTTP_PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def container_resources(runtime: specs.Runtime, settings: RenderSettings, *, gpus: bool) -> dict[str, Any]:
    """The spec's requests and limits over the operator's defaults, resource by resource: a spec with
    only a CPU request keeps the default memory request and limit (a memory limit alone would make
    Kubernetes request all of it). A default that would contradict the spec goes: a default request
    above the spec's limit of that resource (Kubernetes then requests the limit), a default limit
    below the spec's request."""
    requests = {**settings.requests, **(runtime.requests or {})}
    limits = {**settings.limits, **(runtime.limits or {})}
    for name in set(settings.requests) - set(runtime.requests or {}):
        if name in limits and quantity(requests[name]) > quantity(limits[name]):
            del requests[name]
    for name in set(settings.limits) - set(runtime.limits or {}):
        if name in requests and quantity(limits[name]) < quantity(requests[name]):
            del limits[name]
    if gpus and runtime.gpus:
        limits[GPU_RESOURCE] = str(runtime.gpus)
    return non_empty({"requests": requests, "limits": limits})


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def toleration_of(toleration: specs.Toleration) -> dict[str, Any]:
    return non_empty(
        {
            "key": toleration.key,
            "operator": toleration.operator,
            "value": toleration.value,
            "effect": toleration.effect,
            "tolerationSeconds": toleration.toleration_seconds,
        }
    )
