"""Pure: (spec, observed children including pods, previous status, now) -> status.

Conditions follow the Kubernetes API conventions: Ready, Available, Progressing, Degraded, each with
reason, message and lastTransitionTime (kept while status and reason stay the same). Nothing here
talks to the API; reconcile.py observes and passes everything in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import modelplane_contract as contract

from modelplane import spec as specs
from modelplane.render import split, urls
from modelplane.render.cache import caches
from modelplane.render.common import CANARY, LABEL_TRACK, STABLE, cache_name, selector_text
from modelplane.render.route import external_urls, route_problem

HISTORY_LIMIT: Final = 10
# and Optimized with spec.model.optimize, Cached with spec.model.cache
CONDITION_TYPES: Final = ("Ready", "Available", "Progressing", "Degraded")
# The states of a model cache (status.caches[].state).
CACHE_PENDING: Final = "Pending"  # the claim or its Job is being made, or the claim is not bound yet
CACHE_FILLING: Final = "Filling"  # the Job is pulling into the bound claim (and optimizing there)
# The Job completed: the claim holds the verified artifact (and the optimize step's result); or its
# optimize step failed outright after the pull: the claim holds the original, which is served.
CACHE_READY: Final = "Ready"
CACHE_FAILED: Final = "Failed"  # the Job gave up, or the claim's provisioner refused to make its volume

Status = dict[str, Any]


@dataclass(frozen=True)
class Observed:
    """The children as the API server showed them, and what else status depends on."""

    deployments: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # by track
    pods: Sequence[Mapping[str, Any]] = ()
    autoscaler: Mapping[str, Any] | None = None  # the HPA, when there is one
    keda_installed: bool = False
    secret_found: bool | None = None  # None: no credentials Secret named, or not looked up
    gateway_api_installed: bool = False  # the HTTPRoute CRD is established
    gateway: Mapping[str, Any] | None = None  # the Gateway spec.gateway names, if it exists
    route: Mapping[str, Any] | None = None  # our HTTPRoute, as the API shows it
    shadow: Mapping[str, Any] | None = None  # the shadow's Deployment (spec.rollout.shadow)
    traffic_policy_installed: bool = False  # Envoy Gateway's BackendTrafficPolicy CRD (scale to zero)
    consumers: AccessProblem | None = None  # spec.access.consumers cannot be enforced as written
    # Each model cache the spec wants, by name: its claim and its fill Job as the API shows them.
    caches: Mapping[str, tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]] = field(
        default_factory=dict
    )
    # Per cache claim that stays unbound: its provisioner's reason (from its ProvisioningFailed Event).
    claim_failures: Mapping[str, str] = field(default_factory=dict)
    # The pods of the caches' fill Jobs (render.cache.is_fill_pod): their pull reports the bytes, their
    # optimize step (spec.model.optimize) what status.optimization shows.
    fill_pods: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class AccessProblem:
    """spec.access.consumers names consumers that are neither a consumer nor a group, or the
    gateway's policy kinds are not installed (then no route of the model may be served)."""

    unknown: tuple[str, ...] = ()
    namespace: str = ""
    missing_kinds: tuple[str, ...] = ()

    def problem(self) -> Problem:
        if self.missing_kinds:
            return Problem(
                "AccessPolicyUnavailable",
                f"spec.access needs Envoy Gateway's {' and '.join(self.missing_kinds)} "
                "(gateway.envoyproxy.io/v1alpha1), which is not installed: install Envoy Gateway, "
                "or remove spec.access.consumers",
                permanent=True,
            )
        if not self.namespace:
            return Problem(
                "ConsumersNotConfigured",
                "spec.access.consumers: this operator has no consumer namespace (chart value "
                "consumers.namespace, MODELPLANE_CONSUMER_NAMESPACE): ask the platform team to set it up "
                "(docs/consumers.md); until then no API key is accepted",
                permanent=True,
            )
        names = ", ".join(repr(name) for name in self.unknown)
        return Problem(
            "UnknownConsumer",
            f"spec.access.consumers: {names} is neither a consumer nor a group (no Secret labelled "
            f"modelplane.io/consumer in namespace {self.namespace} has that name or group): create "
            "the consumer's Secret (docs/consumers.md) or fix the name; the other consumers are served",
            permanent=True,
        )


@dataclass(frozen=True)
class CacheState:
    state: str  # CACHE_PENDING, CACHE_FILLING, CACHE_READY or CACHE_FAILED
    message: str
    reason: str = "ModelCaching"  # the Cached condition's (and while it holds the pods, Ready's)


@dataclass(frozen=True)
class Problem:
    """Why pods of a track are not Ready, as specific as the pods tell."""

    reason: str
    message: str
    permanent: bool  # no retry will fix it: the spec (or the outside world) must change


def compute(
    md: specs.ModelDeployment,
    observed: Observed,
    previous: Mapping[str, Any],
    now: datetime,
    cluster_domain: str = "cluster.local",
) -> Status:
    stable_dep = observed.deployments.get(STABLE)
    canary_dep = observed.deployments.get(CANARY)
    canary_ready = canary_is_ready(md, canary_dep)
    stable_want, canary_want = split(md, canary_ready)
    if md.autoscaling is not None:
        stable_want = _autoscaled_replicas(md, observed, stable_dep)
    desired = stable_want + (canary_want if canary_ready else 0)
    ready = sum(_int(dep, "status", "readyReplicas") for dep in observed.deployments.values())
    existing = sum(_int(dep, "status", "replicas") for dep in observed.deployments.values())

    draining = _previous_revision_pods(md, observed.pods)
    stable_done = _rolled_out(stable_dep, stable_want) and not draining.get(STABLE)
    canary_done = md.canary is None or (
        canary_ready and _rolled_out(canary_dep, canary_want) and not draining.get(CANARY)
    )
    problem = _cache_problem(md, observed) or _problem(md, observed)
    exposure = _exposure_problem(md, observed)
    stopped = md.autoscaling is None and md.replicas == 0
    scaled_to_zero = md.scales_to_zero and desired == 0 and existing == 0

    conditions = _conditions(
        md=md,
        observed=observed,
        stopped=stopped,
        scaled_to_zero=scaled_to_zero,
        problem=problem,
        exposure=exposure,
        settled=stable_done and canary_done,
        ready=ready,
        desired=desired,
        stable_dep=stable_dep,
        canary_dep=canary_dep,
        draining=sum(draining.values()),
    )
    cached = cache_name(md, md.model) is not None
    if cached:  # the cache's fill Job optimized, once: its pod reports
        optimization = _filled_optimization(md, observed, previous)
    else:
        optimization = optimization_report(md.model, STABLE, observed.pods)
    if md.model.optimize is not None:
        conditions.append(_optimized_condition(optimization, cached=cached))
    cache_report = _cache_report(md, observed, previous.get("caches") or [])
    if cache_report:
        conditions.append(_cached_condition(md, observed))
    http_url, grpc_url = urls(md, cluster_domain)
    service_url = None
    if md.gateway is not None and observed.gateway is not None and observed.gateway_api_installed:
        outside = external_urls(md, observed.gateway)
        if outside is not None:
            service_url, http_url, grpc_url = http_url, outside.http, outside.grpc
    status: Status = {
        "observedGeneration": md.generation,
        "conditions": _with_transition_times(
            conditions, previous.get("conditions") or [], now, md.generation
        ),
        "replicas": existing,
        "readyReplicas": ready,
        "desiredReplicas": desired,
        "ready": f"{ready}/{desired}",
        "selector": selector_text(md),
        "url": http_url,
    }
    if grpc_url:
        status["grpcUrl"] = grpc_url
    if service_url:
        status["serviceUrl"] = service_url
    served = _served_digest(md.model, STABLE, observed.pods)
    optimized_digest = (optimization or {}).get("optimized", {}).get("digest")
    if optimization and optimization["result"] == contract.REASON_OPTIMIZED and optimized_digest:
        status["servedDigest"] = optimized_digest
        original = optimization.get("original", {}).get("digest") or served
        if original:
            status["originalDigest"] = original
    elif served:
        status["servedDigest"] = served
    if optimization:
        status["optimization"] = optimization
    if cache_report:
        status["caches"] = cache_report
    status["stable"] = _revision(
        md.model, _ready_on_current_template(stable_dep), previous.get("stable"), now
    )
    if md.canary is not None:
        status["canary"] = _revision(
            md.canary.model, _ready_on_current_template(canary_dep), previous.get("canary"), now
        )
    if md.shadow is not None:
        status["shadow"] = _revision(
            md.shadow.model, _ready_on_current_template(observed.shadow), previous.get("shadow"), now
        )
    history = list(previous.get("history") or [])
    old_stable = previous.get("stable")
    if old_stable and _revision_key(old_stable) != _revision_key(status["stable"]):
        entry = {key: old_stable[key] for key in ("uri", "digest", "version", "since") if old_stable.get(key)}
        history.insert(0, {**entry, "until": _timestamp(now)})
    if history:
        status["history"] = history[:HISTORY_LIMIT]
    return status


def canary_is_ready(md: specs.ModelDeployment, canary_dep: Mapping[str, Any] | None) -> bool:
    """The canary's every wanted pod runs the current template and is Ready."""
    if md.canary is None or canary_dep is None:
        return False
    _, wanted = split(md, canary_ready=True)
    return _rolled_out(canary_dep, wanted)


def condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for item in status.get("conditions") or []:
        if item.get("type") == kind:
            result: Mapping[str, Any] = item
            return result
    return None


def _conditions(
    *,
    md: specs.ModelDeployment,
    observed: Observed,
    stopped: bool,
    scaled_to_zero: bool,
    problem: Problem | None,
    exposure: Problem | None,
    settled: bool,
    ready: int,
    desired: int,
    stable_dep: Mapping[str, Any] | None,
    canary_dep: Mapping[str, Any] | None,
    draining: int = 0,
) -> list[dict[str, str]]:
    def cond(kind: str, value: bool, reason: str, message: str) -> dict[str, str]:
        return {"type": kind, "status": "True" if value else "False", "reason": reason, "message": message}

    keda_missing = md.autoscaling is not None and md.autoscaling.uses_keda and not observed.keda_installed
    if stopped:
        message = "spec.replicas is 0: the model is stopped; set spec.replicas to serve it"
        return [
            cond("Ready", False, "Stopped", message),
            cond("Available", False, "Stopped", message),
            cond("Progressing", False, "Stopped", message),
            cond("Degraded", False, "Stopped", message),
        ]
    if observed.secret_found is not False and problem is None and exposure is None and scaled_to_zero:
        return [
            cond(kind, kind == "Ready", "ScaledToZero", _scaled_to_zero_message(md))
            for kind in CONDITION_TYPES
        ]
    counts = f"{ready}/{desired} replicas ready"
    if draining:
        counts += f", {draining} pod(s) of the previous revision still draining"
    if observed.secret_found is False:
        secret = md.model.credentials_secret or (md.canary.model.credentials_secret if md.canary else "")
        problem = Problem(
            "CredentialsSecretNotFound",
            f"Secret {secret!r} (spec.model.credentialsSecret) not found in namespace {md.namespace}: "
            "create it or fix the name",
            permanent=True,
        )
    if problem is None and observed.consumers is not None:
        problem = observed.consumers.problem()
    if problem is None and stable_dep is None:
        problem = Problem("Creating", "the Deployment is being created", permanent=False)

    if settled and problem is None and exposure is None and ready >= desired:
        ready_cond = cond("Ready", True, "AllReplicasReady", counts)
    elif problem is not None:
        ready_cond = cond("Ready", False, problem.reason, problem.message)
    elif exposure is not None and settled and ready >= desired:
        ready_cond = cond("Ready", False, exposure.reason, f"{exposure.message} ({counts})")
    elif not settled:
        what = "canary rollout" if md.canary is not None and canary_dep is not None else "rollout"
        ready_cond = cond("Ready", False, "RolloutInProgress", f"{what} in progress: {counts}")
    else:
        ready_cond = cond("Ready", False, "InsufficientReplicas", counts)

    available = cond(
        "Available",
        ready >= 1,
        "MinimumReplicasAvailable" if ready >= 1 else (problem.reason if problem else "NoReplicasReady"),
        counts if ready >= 1 or problem is None else problem.message,
    )
    if problem is not None and problem.permanent:
        progressing = cond("Progressing", False, problem.reason, problem.message)
    elif not settled or problem is not None:
        reason = problem.reason if problem is not None else "RolloutInProgress"
        message = problem.message if problem is not None else f"rolling out: {counts}"
        progressing = cond("Progressing", True, reason, message)
    else:
        progressing = cond("Progressing", False, "RolloutComplete", counts)

    crashing = problem is not None and problem.reason in (
        "ServerCrashLoop",
        "ServerOOMKilled",
        "ImagePullFailed",
    )
    if problem is not None and (problem.permanent or crashing):
        degraded = cond("Degraded", True, problem.reason, problem.message)
    elif exposure is not None and exposure.permanent:
        degraded = cond("Degraded", True, exposure.reason, exposure.message)
    elif md.scales_to_zero and observed.gateway_api_installed and not observed.traffic_policy_installed:
        degraded = cond(
            "Degraded",
            True,
            "ScaleToZeroUnavailable",
            "spec.autoscaling.minReplicas 0 needs Envoy Gateway's BackendTrafficPolicy (CRD "
            "backendtrafficpolicies.gateway.envoyproxy.io) so that the Gateway holds a request while a pod "
            "starts; it is not installed: install Envoy Gateway or set minReplicas to 1; keeping 1 pod "
            "meanwhile",
        )
    elif keda_missing:
        assert md.autoscaling is not None
        degraded = cond(
            "Degraded",
            True,
            "AutoscalerUnavailable",
            f"spec.autoscaling.metric {md.autoscaling.metric} needs KEDA (ScaledObject CRD keda.sh/v1alpha1),"
            " which is not installed: install KEDA or use metric cpu or memory; running "
            f"{max(md.autoscaling.min_replicas, 1)} replica(s) meanwhile",
        )
    else:
        degraded = cond("Degraded", False, "AsExpected", counts)
    return [ready_cond, available, progressing, degraded]


def _scaled_to_zero_message(md: specs.ModelDeployment) -> str:
    assert md.autoscaling is not None
    return (
        f"no pod runs: no request came through the Gateway for {md.autoscaling.scale_down_delay_seconds} s "
        "(spec.autoscaling.scaleDownDelaySeconds); the next request to status.url starts one and is held "
        f"until it is Ready (up to {md.autoscaling.cold_start_timeout_seconds} s, "
        "spec.autoscaling.coldStartTimeoutSeconds); calls to the Service itself are refused meanwhile"
    )


def _exposure_problem(md: specs.ModelDeployment, observed: Observed) -> Problem | None:
    """Why the model is not yet reachable through the Gateway spec.gateway names (None: it is, or
    no Gateway is named). Permanent: only a change (of the spec, the Gateway, the cluster) fixes it."""
    if md.gateway is None:
        return None
    name = f"{md.gateway.namespace}/{md.gateway.name}"
    if not observed.gateway_api_installed:
        return Problem(
            "GatewayAPINotInstalled",
            f"spec.gateway names Gateway {name}, but Gateway API (CRD httproutes.gateway.networking.k8s.io)"
            " is not installed: install Gateway API and a Gateway controller such as Envoy Gateway, or"
            " remove spec.gateway; the model serves inside the cluster meanwhile",
            permanent=True,
        )
    if observed.gateway is None:
        return Problem(
            "GatewayNotFound",
            f"Gateway {name} (spec.gateway) does not exist: create it or fix spec.gateway.name/namespace",
            permanent=True,
        )
    found = route_problem(observed.route, md.gateway)
    if found is not None:
        reason, message = found
        return Problem(reason, message, permanent=reason != "RoutePending")
    if external_urls(md, observed.gateway) is None:
        return Problem(
            "GatewayNotReady", f"Gateway {name} has no address yet (its status.addresses is empty)", False
        )
    return None


def _problem(md: specs.ModelDeployment, observed: Observed) -> Problem | None:
    """The most telling problem among the pods of the current revision, permanent ones first."""
    found: list[Problem] = []
    for pod in observed.pods:
        _, model = _track_and_model(md, pod)
        if not _runs_model(pod, model) or pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        problem = pod_problem(pod, model)
        if problem is not None and problem.reason == "Unschedulable" and md.runtime.gpus:
            gpus = f"each pod needs {md.runtime.gpus} nvidia.com/gpu (spec.runtime.gpus)"
            problem = Problem(problem.reason, f"{problem.message} ({gpus})", problem.permanent)
        if problem is not None and problem.reason == "Unschedulable" and _one_node_cache(model):
            problem = Problem(problem.reason, f"{problem.message} ({_ONE_NODE})", problem.permanent)
        if problem is not None:
            found.append(problem)
    if not found:
        return None
    order = ["DigestMismatch", "ModelPullFailed", "CredentialsSecretNotFound", "ImagePullFailed"]
    found.sort(key=lambda p: (not p.permanent, order.index(p.reason) if p.reason in order else len(order)))
    return found[0]


def pod_problem(pod: Mapping[str, Any], model: specs.Model) -> Problem | None:
    status = pod.get("status") or {}
    for init in status.get("initContainerStatuses") or []:
        if init.get("name") != contract.PULL_CONTAINER_NAME:
            continue
        failure = _pull_failure(init)
        if failure is not None:
            return failure
        waiting = (init.get("state") or {}).get("waiting")
        if waiting:
            problem = _waiting_problem(waiting)
            if problem is not None:
                return problem
        if (init.get("state") or {}).get("running"):
            return Problem("ModelPulling", f"pulling {model.uri}", permanent=False)
        if waiting and waiting.get("reason") == "PodInitializing":
            return Problem("PodStarting", "the pod is starting (sandbox, volumes, images)", permanent=False)
    for init in status.get("initContainerStatuses") or []:
        if init.get("name") == contract.OPTIMIZE_CONTAINER_NAME:
            problem = _optimize_problem(init)
            if problem is not None:
                return problem
    for container in status.get("containerStatuses") or []:
        if container.get("name") != contract.SERVER_CONTAINER_NAME:
            continue
        if not container.get("ready"):
            killed = _oom_killed(pod, container)
            if killed is not None:
                return killed
        waiting = (container.get("state") or {}).get("waiting")
        if waiting:
            problem = _waiting_problem(waiting)
            if problem is not None:
                return problem
            if waiting.get("reason") == "CrashLoopBackOff":
                last = (container.get("lastState") or {}).get("terminated") or {}
                detail = _one_line(last.get("message") or "") or f"exit code {last.get('exitCode', '?')}"
                return Problem(
                    "ServerCrashLoop", f"the model server keeps exiting: {detail}", permanent=False
                )
        if (container.get("state") or {}).get("running") and not container.get("ready"):
            return Problem("ModelLoading", "the model server is loading the model", permanent=False)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return Problem(
                cond.get("reason") or "Unschedulable", _one_line(cond.get("message") or ""), permanent=False
            )
    return None


def _oom_killed(pod: Mapping[str, Any], container: Mapping[str, Any]) -> Problem | None:
    """The server's last end (or its present one) was the kernel's OOM killer: name it and the limit.

    The kubelet reports only the reason and exit code 137; a server killed while loading restarts and
    loads again, so without this the status would flip between loading and a bare exit code."""
    state = container.get("state") or {}
    terminated = state.get("terminated") or (container.get("lastState") or {}).get("terminated") or {}
    if terminated.get("reason") != "OOMKilled":
        return None
    limit = ""
    for spec_container in (pod.get("spec") or {}).get("containers") or []:
        if spec_container.get("name") == container.get("name"):
            limit = ((spec_container.get("resources") or {}).get("limits") or {}).get("memory") or ""
    restarts = container.get("restartCount", 0)
    again = f" ({restarts} restart(s))" if restarts else ""
    if limit:
        message = (
            f"the model server was OOMKilled{again}: it used more than its memory limit of {limit}; "
            "raise spec.runtime.resources.limits.memory or serve a smaller model"
        )
    else:
        message = (
            f"the model server was OOMKilled{again}: the node ran out of memory and no memory limit is "
            "set; set spec.runtime.resources (requests and limits.memory) to what the model needs"
        )
    return Problem("ServerOOMKilled", message, permanent=False)


def _optimize_problem(init: Mapping[str, Any]) -> Problem | None:
    """The optimize step running, or failing (it exits non-zero only when it could not run at all)."""
    state = init.get("state") or {}
    if "running" in state:
        return Problem("ModelOptimizing", "optimizing the model (spec.model.optimize)", permanent=False)
    last = state.get("terminated") or (init.get("lastState") or {}).get("terminated")
    if last is not None and last.get("exitCode", 0) != 0:
        detail = _one_line(last.get("message") or "") or f"exit code {last.get('exitCode')}"
        return Problem("ModelOptimizing", f"the optimize step failed, retrying: {detail}", permanent=False)
    return None


def _pull_failure(init: Mapping[str, Any]) -> Problem | None:
    """The pull's own verdict, from its current or (while restarting) its last terminated state."""
    state = init.get("state") or {}
    current = state.get("terminated")
    last = (init.get("lastState") or {}).get("terminated")
    if current is not None:
        terminated = current
    elif last is not None:
        # Waiting in back-off, or running again: the last failure tells why.
        terminated = last
    else:
        return None
    exit_code = terminated.get("exitCode", 0)
    if exit_code == 0:
        return None
    failure = contract.parse_termination_message(terminated.get("message") or "")
    if exit_code == contract.EXIT_PERMANENT or (exit_code != contract.EXIT_TRANSIENT and failure.permanent):
        reason = "DigestMismatch" if failure.reason == contract.REASON_DIGEST_MISMATCH else "ModelPullFailed"
        return Problem(reason, f"{failure.reason}: {failure.message}", permanent=True)
    message = failure.message or f"exit code {exit_code}"
    return Problem("ModelPulling", f"pull failed, retrying: {failure.reason}: {message}", permanent=False)


_WAITING_REASONS: Final = {
    "ErrImagePull": "ImagePullFailed",
    "ImagePullBackOff": "ImagePullFailed",
    "InvalidImageName": "ImagePullFailed",
    "CreateContainerConfigError": "ContainerConfigError",
    "CreateContainerError": "ContainerConfigError",
}


def _waiting_problem(waiting: Mapping[str, Any]) -> Problem | None:
    reason = _WAITING_REASONS.get(waiting.get("reason") or "")
    if reason is None:
        return None
    message = _one_line(waiting.get("message") or waiting.get("reason") or "")
    if reason == "ContainerConfigError" and "secret" in message and "not found" in message:
        return Problem("CredentialsSecretNotFound", message, permanent=True)
    return Problem(reason, message, permanent=reason == "ContainerConfigError")


def _runs_model(pod: Mapping[str, Any], model: specs.Model) -> bool:
    """The pod belongs to the current revision of its track (an old pod's failure is history)."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") != contract.SERVER_CONTAINER_NAME:
            continue
        env = {item.get("name"): item.get("value") for item in container.get("env") or []}
        return (
            env.get(contract.ENV_MODEL_URI) == model.uri
            and env.get(contract.ENV_MODEL_DIGEST) == model.digest
            and env.get(contract.ENV_OPTIMIZE) == (model.optimize.as_json() if model.optimize else None)
        )
    return False


def _previous_revision_pods(md: specs.ModelDeployment, pods: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Per track, the pods of an older model revision that may still answer (terminating ones too).

    A Deployment counts its rollout complete once the old pods are terminating, but a terminating pod
    keeps answering through its drain while the Service's endpoints catch up: until it is gone, a
    client can still get the old model's answers, so the rollout is not over."""
    found: dict[str, int] = {}
    for pod in pods:
        if not _server_running(pod):
            continue  # never started, or ended (an evicted pod stays listed): it answers nothing
        track, model = _track_and_model(md, pod)
        if track == CANARY and md.canary is None:
            continue  # a removed canary's pods: pruned with its Deployment, not a revision of stable
        if not _runs_model(pod, model):
            found[track] = found.get(track, 0) + 1
    return found


def _track_and_model(md: specs.ModelDeployment, pod: Mapping[str, Any]) -> tuple[str, specs.Model]:
    """The pod's track, and the model the spec wants on it now."""
    track = (pod.get("metadata", {}).get("labels") or {}).get(LABEL_TRACK, STABLE)
    return track, md.canary.model if track == CANARY and md.canary is not None else md.model


def _server_running(pod: Mapping[str, Any]) -> bool:
    pod_status = pod.get("status") or {}
    if pod_status.get("phase") in ("Succeeded", "Failed"):
        return False
    return any(
        item.get("name") == contract.SERVER_CONTAINER_NAME and "running" in (item.get("state") or {})
        for item in pod_status.get("containerStatuses") or []
    )


def _served_digest(model: specs.Model, track: str, pods: Sequence[Mapping[str, Any]]) -> str | None:
    """The digest a successful pull of the current revision reported (in its termination message)."""
    for pod in pods:
        labels = pod.get("metadata", {}).get("labels") or {}
        if labels.get(LABEL_TRACK, STABLE) != track or not _runs_model(pod, model):
            continue
        if model.cache is not None and _server_running(pod):
            # No pull of its own: the cache's Job verified the digest, the server checked its record.
            return model.digest
        for init in (pod.get("status") or {}).get("initContainerStatuses") or []:
            terminated = (init.get("state") or {}).get("terminated") or {}
            if init.get("name") == contract.PULL_CONTAINER_NAME and terminated.get("exitCode") == 0:
                pulled = contract.parse_pulled_message(terminated.get("message") or "")
                if pulled is not None:
                    return pulled.digest
    return None


def optimization_report(
    model: specs.Model, track: str, pods: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """What the optimize step of the current revision reported (its termination message), from the
    first such pod by name: the step measured once per digest, so every pod reports the same."""
    if model.optimize is None:
        return None
    for pod in sorted(pods, key=lambda item: str(item.get("metadata", {}).get("name", ""))):
        labels = pod.get("metadata", {}).get("labels") or {}
        if labels.get(LABEL_TRACK, STABLE) != track or not _runs_model(pod, model):
            continue
        report = _optimize_report(_terminated(pod, contract.OPTIMIZE_CONTAINER_NAME))
        if report is not None:
            return report
    return None


def _optimize_report(terminated: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A successful optimize step's report: its termination message ``<Reason>: <JSON>``."""
    if terminated is None or terminated.get("exitCode") != 0:
        return None
    reason, _, body = str(terminated.get("message") or "").strip().partition(": ")
    if reason not in contract.OPTIMIZE_REASONS:
        return None
    try:
        report = json.loads(body)
    except ValueError:
        return None
    return {"result": reason, **report} if isinstance(report, dict) else None


def _terminated(pod: Mapping[str, Any], container: str) -> Mapping[str, Any] | None:
    """The terminated state of the pod's (init) container of that name, if it has ended."""
    status = pod.get("status") or {}
    for item in (*(status.get("initContainerStatuses") or ()), *(status.get("containerStatuses") or ())):
        if item.get("name") == container:
            terminated = (item.get("state") or {}).get("terminated")
            return terminated if isinstance(terminated, Mapping) else None
    return None


def _filled_optimization(
    md: specs.ModelDeployment, observed: Observed, previous: Mapping[str, Any]
) -> dict[str, Any] | None:
    """What the optimize step of the stable model's cache fill Job reported (measured once, by the
    Job); a step that failed outright, as OptimizationFailed; once the fill pod is gone, what status
    showed for this very cache (its name carries the digest and the optimize settings)."""
    model = md.model
    name = cache_name(md, model)
    if model.optimize is None or name is None:
        return None
    job = observed.caches.get(name, (None, None))[1]
    pods = sorted(_job_pods(name, job, observed.fill_pods), key=lambda p: str(p["metadata"].get("name")))
    for pod in pods:
        report = _optimize_report(_terminated(pod, contract.OPTIMIZE_CONTAINER_NAME))
        if report is not None:
            return report
    failure = _optimize_failure(name, model, job, observed.fill_pods)
    if failure is not None:
        return {
            "result": contract.REASON_OPTIMIZATION_FAILED,
            "message": f"{failure}: serving the original",
            "original": {"digest": model.digest},
            "applied": [],
        }
    filled = any(
        isinstance(entry, Mapping) and entry.get("name") == name and entry.get("state") == CACHE_READY
        for entry in previous.get("caches") or []
    )
    shown = previous.get("optimization")
    return dict(shown) if filled and isinstance(shown, Mapping) else None


def _job_pods(
    name: str, job: Mapping[str, Any] | None, fill_pods: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The pods of the fill Job NAME (by uid: not a deleted namesake's)."""
    job_uid = ((job or {}).get("metadata") or {}).get("uid")
    if not job_uid:
        return []
    return [
        pod
        for pod in fill_pods
        if any(
            (o.get("kind"), o.get("name"), o.get("uid")) == ("Job", name, job_uid)
            for o in (pod.get("metadata") or {}).get("ownerReferences") or []
        )
    ]


def _job_failed(job: Mapping[str, Any] | None) -> bool:
    return any(
        item.get("type") == "Failed" and item.get("status") == "True"
        for item in ((job or {}).get("status") or {}).get("conditions") or []
    )


def _optimize_failure(
    name: str, model: specs.Model, job: Mapping[str, Any] | None, fill_pods: Sequence[Mapping[str, Any]]
) -> str | None:
    """Why the fill Job NAME failed in its optimize step after a successful pull (render/cache.py
    fails it at once), or None: then the claim holds the verified original, with no record of the
    step beside it, and the replicas serve the original."""
    if model.optimize is None or not _job_failed(job):
        return None
    for pod in _job_pods(name, job, fill_pods):
        pull = _terminated(pod, contract.PULL_CONTAINER_NAME)
        step = _terminated(pod, contract.OPTIMIZE_CONTAINER_NAME)
        if pull is None or pull.get("exitCode") != 0 or step is None or step.get("exitCode") == 0:
            continue
        how = f"exit code {step.get('exitCode')}"
        if step.get("reason") and step.get("reason") not in ("Error", "Completed"):
            how += f", {step['reason']}"
        detail = _one_line(str(step.get("message") or ""))
        return f"the optimize step of Job {name} failed ({how})" + (f": {detail}" if detail else "")
    return None


_ONE_NODE: Final = (
    "the model cache is ReadWriteOnce: only pods on the node that mounts it can use it; for replicas "
    "across nodes set spec.model.cache.accessMode: ReadWriteMany with a storage class that offers it"
)


def _one_node_cache(model: specs.Model) -> bool:
    return model.cache is not None and model.cache.access_mode == "ReadWriteOnce"


def cache_state(
    name: str,
    model: specs.Model,
    claim: Mapping[str, Any] | None,
    job: Mapping[str, Any] | None,
    claim_failure: str | None = None,
    fill_pods: Sequence[Mapping[str, Any]] = (),
) -> CacheState:
    """Where the cache NAME of MODEL stands, from its claim and fill Job (and, for a claim that stays
    unbound, its provisioner's reason; with spec.model.optimize, the Job's pods)."""
    if claim is None or job is None or (claim.get("metadata") or {}).get("deletionTimestamp"):
        return CacheState(CACHE_PENDING, f"creating the claim {name} and the Job {name} that fills it")
    conditions = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or []}
    failed = conditions.get("Failed") or {}
    optimize_failed = _optimize_failure(name, model, job, fill_pods)
    if optimize_failed is not None:
        return CacheState(
            CACHE_READY,
            f"the claim {name} holds {model.digest}, not optimized: {optimize_failed}",
            "CacheReady",
        )
    if failed.get("status") == "True":
        detail = _one_line(str(failed.get("message") or failed.get("reason") or "it failed"))
        permanent = failed.get("reason") == "PodFailurePolicy"
        why = (
            "a permanent pull failure (the digest differs, the object is missing, access is denied)"
            if permanent
            else "every retry of the pull failed (the store unreachable, or the claim too small)"
        )
        return CacheState(
            CACHE_FAILED,
            f"the Job {name} that fills the model cache failed: {detail}: {why}; `kubectl logs job/{name}` "
            f"shows the pull's reason; fix {model.uri} or spec.model (a new digest fills a new cache), "
            f"or delete Job {name} to try again",
            "CacheFillFailed",
        )
    if (conditions.get("Complete") or {}).get("status") == "True":
        return CacheState(CACHE_READY, f"the claim {name} holds {model.digest}", "CacheReady")
    mode = model.cache.access_mode if model.cache else ""
    if (claim.get("status") or {}).get("phase") != "Bound" and claim_failure:
        storage_class = (claim.get("spec") or {}).get("storageClassName") or "the default"
        return CacheState(
            CACHE_FAILED,
            f"the claim {name} ({mode}, storage class {storage_class}) gets no volume: its provisioner "
            f"says {_one_line(claim_failure)!r}; set spec.model.cache.storageClassName to a class that "
            f"offers {mode}, or accessMode ReadWriteOnce with the replicas on one node",
            "CacheClaimFailed",
        )
    if (claim.get("status") or {}).get("phase") != "Bound":
        message = f"the claim {name} ({mode}) is not bound yet"
        if mode != "ReadWriteOnce":
            message += (
                f"; if it stays Pending, its storage class may not offer {mode} (local-path offers "
                f"ReadWriteOnce only): `kubectl describe pvc {name}` shows the provisioner's reason; "
                "use a class that offers it, or accessMode ReadWriteOnce on one node"
            )
        return CacheState(CACHE_PENDING, message)
    then = ", then optimizing it there (spec.model.optimize)" if model.optimize is not None else ""
    return CacheState(CACHE_FILLING, f"the Job {name} is pulling {model.uri} into the claim {name}{then}")


def _cache_states(md: specs.ModelDeployment, observed: Observed) -> dict[str, CacheState]:
    return {
        name: cache_state(
            name,
            model,
            *observed.caches.get(name, (None, None)),
            observed.claim_failures.get(name),
            observed.fill_pods,
        )
        for name, model in caches(md)
    }


def _cache_report(
    md: specs.ModelDeployment, observed: Observed, previous: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """status.caches: each cache the spec wants, with its state and size as its claim shows them, and
    once filled, the bytes its fill Job pulled."""
    states = _cache_states(md, observed)
    report = []
    for name, model in caches(md):
        assert model.cache is not None
        claim, job = observed.caches.get(name, (None, None))
        claim = claim or {}
        claim_spec, claim_status = claim.get("spec") or {}, claim.get("status") or {}
        size = (claim_status.get("capacity") or {}).get("storage") or model.cache.size
        entry: dict[str, Any] = {
            "name": name,
            "digest": model.digest,
            "state": states[name].state,
            "size": str(size),
            "accessModes": list(claim_status.get("accessModes") or [model.cache.access_mode]),
        }
        storage_class = claim_spec.get("storageClassName") or model.cache.storage_class_name
        if storage_class:
            entry["storageClassName"] = storage_class
        if states[name].state == CACHE_READY:
            pulled = _filled_bytes(name, model, job, observed.fill_pods)
            if pulled is None:
                pulled = _reported_bytes(name, model, previous)
            if pulled is not None:
                entry["bytes"] = pulled
        else:
            entry["message"] = states[name].message
        report.append(entry)
    return report


def _filled_bytes(
    name: str, model: specs.Model, job: Mapping[str, Any] | None, fill_pods: Sequence[Mapping[str, Any]]
) -> int | None:
    """The bytes the fill Job NAME pulled, as its pod's successful pull reported them (its termination
    message) for MODEL's digest; None if no pod of this Job (by uid: not a deleted namesake's) says so."""
    for pod in _job_pods(name, job, fill_pods):
        terminated = _terminated(pod, contract.PULL_CONTAINER_NAME) or {}
        if terminated.get("exitCode") != 0:
            continue
        pulled = contract.parse_pulled_message(str(terminated.get("message") or ""))
        if pulled is not None and pulled.digest == model.digest:
            return pulled.bytes
    return None


def _reported_bytes(name: str, model: specs.Model, previous: Sequence[Mapping[str, Any]]) -> int | None:
    """The bytes status already showed for the filled cache NAME: kept once its fill pod is gone (the
    pod garbage collector, or someone, removed it) rather than dropped from status."""
    for entry in previous:
        if not isinstance(entry, Mapping) or entry.get("name") != name or entry.get("digest") != model.digest:
            continue
        value = entry.get("bytes")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _cached_condition(md: specs.ModelDeployment, observed: Observed) -> dict[str, str]:
    """Cached: True once every cache the spec wants is filled; the first one that is not says why."""
    states = _cache_states(md, observed)
    waiting = [state for state in states.values() if state.state != CACHE_READY]
    failed = [state for state in waiting if state.state == CACHE_FAILED]
    if failed or waiting:
        first = (failed or waiting)[0]
        return {"type": "Cached", "status": "False", "reason": first.reason, "message": first.message}
    message = "; ".join(state.message for state in states.values())
    if any(_one_node_cache(model) for _, model in caches(md)):
        message += f" ({_ONE_NODE})"
    return {"type": "Cached", "status": "True", "reason": "CacheReady", "message": message}


def _cache_problem(md: specs.ModelDeployment, observed: Observed) -> Problem | None:
    """The live tracks' pods wait for their cache (their Deployment is held until it is filled)."""
    states = _cache_states(md, observed)
    live = [m for m in (md.model, md.canary.model if md.canary else None) if m is not None]
    for model in live:
        name = cache_name(md, model)
        if name is None or states[name].state == CACHE_READY:
            continue
        if states[name].state == CACHE_FAILED:
            return Problem(states[name].reason, states[name].message, permanent=True)
        return Problem("ModelCaching", f"filling the model cache: {states[name].message}", permanent=False)
    return None


def _optimized_condition(report: Mapping[str, Any] | None, *, cached: bool) -> dict[str, str]:
    """Optimized: True when the optimized form is served; False with the step's reason otherwise."""
    if report is None:
        who = "the model cache's fill Job has not finished" if cached else "no pod has finished"
        return {
            "type": "Optimized",
            "status": "Unknown",
            "reason": "Optimizing",
            "message": f"spec.model.optimize: {who} its optimize step yet",
        }
    result = str(report["result"])
    return {
        "type": "Optimized",
        "status": "True" if result == contract.REASON_OPTIMIZED else "False",
        "reason": result,
        "message": _one_line(str(report.get("message") or "")),
    }


def _rolled_out(dep: Mapping[str, Any] | None, wanted: int) -> bool:
    """The Deployment runs ``wanted`` pods of its current template, all Ready, and no old ones."""
    if dep is None:
        return False
    generation = _int(dep, "metadata", "generation")
    if _int(dep, "status", "observedGeneration") < generation:
        return False
    spec_replicas = (dep.get("spec") or {}).get("replicas", wanted)
    status = dep.get("status") or {}
    return bool(
        status.get("updatedReplicas", 0) >= spec_replicas
        and status.get("replicas", 0) == spec_replicas
        and status.get("readyReplicas", 0) >= spec_replicas
        and spec_replicas >= wanted
    )


def _autoscaled_replicas(
    md: specs.ModelDeployment, observed: Observed, stable_dep: Mapping[str, Any] | None
) -> int:
    assert md.autoscaling is not None
    if observed.autoscaler is not None:
        wanted = (observed.autoscaler.get("status") or {}).get("desiredReplicas")
        if isinstance(wanted, int) and wanted > 0:
            return wanted
    if stable_dep is not None and isinstance((stable_dep.get("spec") or {}).get("replicas"), int):
        return int(stable_dep["spec"]["replicas"])
    return max(md.autoscaling.min_replicas, 1)


def _revision(
    model: specs.Model, ready: int, previous: Mapping[str, Any] | None, now: datetime
) -> dict[str, Any]:
    revision: dict[str, Any] = {"uri": model.uri}
    if model.digest:
        revision["digest"] = model.digest
    if model.version:
        revision["version"] = model.version
    revision["readyReplicas"] = ready
    same = previous is not None and _revision_key(previous) == _revision_key(revision)
    revision["since"] = previous["since"] if same and previous and previous.get("since") else _timestamp(now)
    return revision


def _revision_key(revision: Mapping[str, Any]) -> tuple[Any, ...]:
    return revision.get("uri"), revision.get("digest"), revision.get("version")


def _with_transition_times(
    conditions: list[dict[str, str]], previous: Sequence[Mapping[str, Any]], now: datetime, generation: int
) -> list[dict[str, Any]]:
    before = {item.get("type"): item for item in previous}
    result: list[dict[str, Any]] = []
    for item in conditions:
        old = before.get(item["type"])
        changed = old is None or old.get("status") != item["status"]
        since = (
            _timestamp(now)
            if changed or not old or not old.get("lastTransitionTime")
            else old["lastTransitionTime"]
        )
        result.append({**item, "lastTransitionTime": since, "observedGeneration": generation})
    return result


def _timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _ready_on_current_template(deployment: Mapping[str, Any] | None) -> int:
    """Ready pods that run the Deployment's current template: a revision's readyReplicas. Mid-rollout
    the Deployment's own readyReplicas counts the previous template's pods too; those are taken off as
    if all were ready, so this never counts a pod of the old model (it may undercount for a moment)."""
    if deployment is None:
        return 0
    seen = _int(deployment, "status", "observedGeneration")
    if seen < _int(deployment, "metadata", "generation"):
        return 0  # the controller has not seen the current template yet
    previous_template = _int(deployment, "status", "replicas") - _int(deployment, "status", "updatedReplicas")
    return max(0, _int(deployment, "status", "readyReplicas") - max(0, previous_template))


def _int(obj: Mapping[str, Any] | None, section: str, key: str) -> int:
    if obj is None:
        return 0
    value = (obj.get(section) or {}).get(key, 0)
    return value if isinstance(value, int) else 0
