"""spec.model.cache with spec.model.optimize: the cache's fill Job pulls and then runs the optimize
step into the claim, once; the replicas run neither and serve what it decided; status.optimization and
the Optimized condition come from the fill pod's report; a step that fails outright leaves the
original served."""

from __future__ import annotations

import copy
import json
from typing import Any

import modelplane_contract as contract
import pytest
from modelplane import plan, render, spec, status
from modelplane.render.common import cache_name

from tests.operator.memory_kube import MemoryKube
from tests.operator.test_cache import bound, finished, pulled, served
from tests.operator.test_cache import fill_pod as cache_fill_pod
from tests.operator.test_plan import LATER, NOW, body, kinds, observed
from tests.operator.test_reconcile import controller, run
from tests.operator.test_render import AWS_KEYS, SETTINGS

CASE = "sklearn-cache-optimize"
KEY = ("ml", "iris-mlp")
SECRETS = {"s3-credentials": AWS_KEYS}
DIGEST = "sha256:" + "cd" * 32
OPTIMIZED = "sha256:" + "ef" * 32
REPORT = {
    "message": "serving the onnx + int8 form: label agreement 0.9980 on 512 samples",
    "applied": ["onnx", "int8"],
    "original": {"digest": DIGEST, "bytes": 1234, "p50Batch1Microseconds": 410.0,
                 "p50Batch64Microseconds": 900.0},
    "optimized": {"digest": OPTIMIZED, "bytes": 8855, "p50Batch1Microseconds": 30.0,
                  "p50Batch64Microseconds": 60.0},
    "gate": {"passed": True, "agreement": 0.998, "minAgreement": 0.98, "samples": 512},
    "cache": "stored in s3://models/iris/mlp.joblib.modelplane-optimized/0123",
}  # fmt: skip


def md_body(**model: Any) -> dict[str, Any]:
    obj = body(CASE)
    obj["spec"]["model"].update(model)
    for key in [k for k, v in model.items() if v is None]:
        del obj["spec"]["model"][key]
    return obj


def parsed(**model: Any) -> spec.ModelDeployment:
    return spec.parse(md_body(**model))


def name_of(**model: Any) -> str:
    md = parsed(**model)
    name = cache_name(md, md.model)
    assert name is not None
    return name


def rendered(**model: Any) -> dict[tuple[str, str], dict[str, Any]]:
    manifests = render.children(parsed(**model), SETTINGS, render.Observations(secret_keys=AWS_KEYS))
    return {(m["kind"], m["metadata"]["name"]): m for m in manifests}


def rendered_pair(**model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    by_key = rendered(**model)
    name = name_of(**model)
    return served(by_key[("PersistentVolumeClaim", name)]), served(by_key[("Job", name)])


def terminated(exit_code: int, message: str = "", reason: str = "") -> dict[str, Any]:
    state = {"exitCode": exit_code, "message": message}
    return {"terminated": {**state, "reason": reason or ("Completed" if exit_code == 0 else "Error")}}


def fill_pod(
    job: dict[str, Any],
    step: dict[str, Any] | None = None,
    *,
    pull: dict[str, Any] | None = None,
    suffix: str = "x7k2p",
) -> dict[str, Any]:
    """A pod of the fill Job JOB as the kubelet reports it: its pull (an init container) ended as
    PULL (by default a success reporting DIGEST), its optimize step in state STEP (None: running)."""
    pod = cache_fill_pod(job)
    pod["metadata"]["name"] = f"{job['metadata']['name']}-{suffix}"
    pod["metadata"]["uid"] += f"-{suffix}"
    pull = pull if pull is not None else terminated(0, pulled(DIGEST))
    step_state = step if step is not None else {"running": {}}
    if "terminated" not in pull:
        step_state = {"waiting": {"reason": "PodInitializing"}}
    ended = step_state.get("terminated")
    pod["status"] = {
        "phase": "Running" if ended is None else ("Succeeded" if ended["exitCode"] == 0 else "Failed"),
        "initContainerStatuses": [{"name": contract.PULL_CONTAINER_NAME, "state": pull}],
        "containerStatuses": [{"name": contract.OPTIMIZE_CONTAINER_NAME, "state": step_state}],
    }
    return pod


def reported(reason: str = contract.REASON_OPTIMIZED, report: dict[str, Any] | None = None) -> dict[str, Any]:
    """The optimize step's state once it has ended and written its one line."""
    return terminated(0, f"{reason}: {json.dumps(report or REPORT)}")


def cache_status(
    claim: Any,
    job: Any,
    fill_pods: tuple[dict[str, Any], ...] = (),
    previous: dict[str, Any] | None = None,
    pods: tuple[dict[str, Any], ...] = (),
    **model: Any,
) -> dict[str, Any]:
    md = parsed(**model)
    observed = status.Observed(caches={name_of(**model): (claim, job)}, fill_pods=fill_pods, pods=pods)
    return status.compute(md, observed, previous or {}, NOW)


def optimized(result: dict[str, Any]) -> dict[str, Any]:
    found = status.condition(result, "Optimized")
    assert found is not None
    return dict(found)


OOM_KILLED = terminated(137, reason="OOMKilled")
OTHER_GATE: dict[str, Any] = {"optimize": {"onnx": True, "quantize": "int8", "gate": {"minAgreement": 0.9}}}


# --- spec and render ------------------------------------------------------------------------------


def test_a_cache_with_optimize_is_accepted() -> None:
    model = parsed().model
    assert model.cache == spec.Cache(size="1Gi")
    assert model.optimize == spec.Optimize(onnx=True, quantize="int8", gate=spec.Gate(min_agreement=0.98))


def test_the_fill_job_pulls_then_runs_the_deployments_own_optimize_step_into_the_claim() -> None:
    """The Job's init container is the uncached pod's pull and its container the uncached pod's
    optimize step, the same rendering; the claim is the volume they write (read-write)."""
    uncached_body = md_body(cache=None)
    uncached = render.children(spec.parse(uncached_body), SETTINGS, render.Observations(secret_keys=AWS_KEYS))
    uncached_pod = next(m for m in uncached if m["kind"] == "Deployment")["spec"]["template"]["spec"]
    pull, step = uncached_pod["initContainers"]
    assert step["name"] == contract.OPTIMIZE_CONTAINER_NAME
    by_key = rendered()
    name = name_of()
    job = by_key[("Job", name)]["spec"]
    pod = job["template"]["spec"]
    assert pod["initContainers"] == [pull]
    assert pod["containers"] == [step]
    assert {"name": contract.ENV_OPTIMIZE, "value": parsed().model.optimize.as_json()} in step["env"]  # type: ignore[union-attr]
    assert {"name": contract.MODEL_VOLUME_NAME, "persistentVolumeClaim": {"claimName": name}} in pod[
        "volumes"
    ]
    assert all(not mount.get("readOnly") for mount in step["volumeMounts"])
    assert job["podFailurePolicy"]["rules"] == [
        {
            "action": "FailJob",
            "onExitCodes": {
                "containerName": contract.PULL_CONTAINER_NAME,
                "operator": "In",
                "values": [contract.EXIT_USAGE, contract.EXIT_PERMANENT],
            },
        },
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        # After the eviction rule: an evicted pod's step is retried, any other end of it is final.
        {
            "action": "FailJob",
            "onExitCodes": {
                "containerName": contract.OPTIMIZE_CONTAINER_NAME,
                "operator": "NotIn",
                "values": [contract.EXIT_OK],
            },
        },
    ]


def test_the_replicas_run_neither_pull_nor_optimize_and_mount_the_claim_read_only() -> None:
    by_key = rendered()
    pod = by_key[("Deployment", "iris-mlp")]["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert {
        "name": contract.MODEL_VOLUME_NAME,
        "persistentVolumeClaim": {"claimName": name_of(), "readOnly": True},
    } in pod["volumes"]
    [server] = pod["containers"]
    mount = next(m for m in server["volumeMounts"] if m["name"] == contract.MODEL_VOLUME_NAME)
    assert mount["readOnly"] is True
    # The revision's mark (status tells the pods of these settings from older ones by it).
    assert {"name": contract.ENV_OPTIMIZE, "value": parsed().model.optimize.as_json()} in server["env"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "change",
    [
        {"optimize": None},
        {"optimize": {"onnx": True}},
        {"optimize": {"onnx": True, "quantize": "int8", "gate": {"minAgreement": 0.9}}},
        {"optimize": {"onnx": True, "quantize": "int8", "gate": {"minAgreement": 0.98, "maxAbsError": 0.5}}},
        {"allowPickle": True},
    ],
)
def test_other_optimize_settings_fill_a_new_cache(change: dict[str, Any]) -> None:
    """The step writes its result into the claim: a changed setting it reads is a new cache, never a
    change to a filled one (its Job is created, never patched)."""
    assert name_of() == name_of()  # a restarted operator renders the same
    assert name_of(**change) != name_of()
    assert len(name_of(**change)) == len(name_of())


def test_without_optimize_a_caches_name_is_as_it_was() -> None:
    """A cache without optimize keeps the name earlier versions gave it (no second fill on upgrade)."""
    obj = body("sklearn-cache")
    md = spec.parse(obj)
    assert cache_name(md, md.model) == "iris-cache-ababababab-3912"


def test_a_changed_gate_fills_a_new_cache_while_the_old_one_serves() -> None:
    live: dict[tuple[str, str], Any] = {}
    written: dict[str, Any] = {}
    want = plan.desired(md_body(), SETTINGS)
    for _ in range(4):
        result = plan.plan(want, observed(*live.values(), secrets=SECRETS), written, NOW)
        written = dict(result.status or written)
        for manifest in result.apply:
            obj = served(manifest)
            obj = bound(obj) if obj["kind"] == "PersistentVolumeClaim" else obj
            obj = finished(obj) if obj["kind"] == "Job" else obj
            live[(obj["kind"], obj["metadata"]["name"])] = obj
    assert ("Deployment", "iris-mlp") in live
    stricter = plan.desired(md_body(optimize={"onnx": True, "quantize": "int8"}), SETTINGS)
    step = plan.plan(stricter, observed(*live.values(), secrets=SECRETS), written, LATER)
    new = name_of(optimize={"onnx": True, "quantize": "int8"})
    assert kinds(step.apply) == [("PersistentVolumeClaim", new), ("Job", new)]
    assert step.prune == ()


# --- status ---------------------------------------------------------------------------------------


def test_while_the_job_optimizes_status_says_so() -> None:
    claim, job = rendered_pair()
    result = cache_status(bound(claim), job, fill_pods=(fill_pod(job),))
    [cache] = result["caches"]
    assert cache["state"] == status.CACHE_FILLING
    assert "then optimizing it there (spec.model.optimize)" in cache["message"]
    condition = optimized(result)
    assert (condition["status"], condition["reason"]) == ("Unknown", "Optimizing")
    assert condition["message"] == (
        "spec.model.optimize: the model cache's fill Job has not finished its optimize step yet"
    )
    assert "optimization" not in result


def test_the_fill_pods_report_is_status_optimization_and_the_served_digest() -> None:
    claim, job = rendered_pair()
    deployment = rendered()[("Deployment", "iris-mlp")]
    replica = replica_of(deployment)
    result = cache_status(
        bound(claim), finished(job), fill_pods=(fill_pod(job, reported()),), pods=(replica,)
    )
    assert result["optimization"] == {"result": contract.REASON_OPTIMIZED, **REPORT}
    assert (optimized(result)["status"], optimized(result)["reason"]) == ("True", "Optimized")
    assert result["servedDigest"] == OPTIMIZED
    assert result["originalDigest"] == DIGEST
    [cache] = result["caches"]
    assert cache["state"] == status.CACHE_READY
    assert cache["bytes"] == 1234  # from the pull, an init container here


def test_a_rejected_optimization_serves_the_original_with_the_figure() -> None:
    claim, job = rendered_pair()
    rejected = {
        **REPORT,
        "message": "the onnx + int8 form fell below the gate (label agreement 0.9531): serving the original",
        "gate": {"passed": False, "agreement": 0.9531, "minAgreement": 0.98, "samples": 512},
    }
    replica = replica_of(rendered()[("Deployment", "iris-mlp")])
    result = cache_status(
        bound(claim),
        finished(job),
        fill_pods=(fill_pod(job, reported(contract.REASON_OPTIMIZATION_REJECTED, rejected)),),
        pods=(replica,),
    )
    condition = optimized(result)
    assert (condition["status"], condition["reason"]) == ("False", contract.REASON_OPTIMIZATION_REJECTED)
    assert "label agreement 0.9531" in condition["message"]
    assert result["servedDigest"] == DIGEST
    assert "originalDigest" not in result


def test_a_step_that_fails_outright_leaves_the_original_served_and_says_optimization_failed() -> None:
    """The Job fails at once (podFailurePolicy), the pull's verified original is in the claim, and no
    record of the step: the cache is Ready, the Deployment is made, the original served."""
    claim, job = rendered_pair()
    message = (
        "Container model-optimize for pod ml/x failed with exit code 137 matching FailJob rule at index 2"
    )
    failed_job = finished(job, "Failed", "PodFailurePolicy", message)
    pods = (fill_pod(job, OOM_KILLED),)
    result = cache_status(bound(claim), failed_job, fill_pods=pods)
    [cache] = result["caches"]
    assert cache["state"] == status.CACHE_READY
    assert cache["bytes"] == 1234
    cached = status.condition(result, "Cached")
    assert cached is not None
    assert cached["status"] == "True"
    assert "not optimized: the optimize step of Job" in cached["message"]
    condition = optimized(result)
    assert (condition["status"], condition["reason"]) == ("False", contract.REASON_OPTIMIZATION_FAILED)
    assert "exit code 137, OOMKilled" in condition["message"]
    assert condition["message"].endswith("serving the original")
    assert result["optimization"]["original"] == {"digest": DIGEST}
    ready = status.condition(result, "Ready")
    assert ready is not None
    assert ready["reason"] != "CacheFillFailed"
    # The plan makes the Deployment that serves the original from the claim.
    live = {(o["kind"], o["metadata"]["name"]): o for o in (bound(claim), failed_job)}
    for manifest in render.children(parsed(), SETTINGS, render.Observations(secret_keys=AWS_KEYS)):
        if manifest["kind"] not in ("Job", "PersistentVolumeClaim", "Deployment"):
            live[(manifest["kind"], manifest["metadata"]["name"])] = served(manifest)
    result_plan = plan.plan(
        plan.desired(md_body(), SETTINGS),
        observed(*live.values(), secrets=SECRETS, fill_pods=pods),
        {},
        NOW,
    )
    assert kinds(result_plan.apply) == [("Deployment", "iris-mlp")]


def test_a_failed_pull_in_a_job_with_optimize_is_still_a_failed_cache() -> None:
    claim, job = rendered_pair()
    message = "Container model-pull for pod ml/x failed with exit code 10 matching FailJob rule at index 0"
    failed_job = finished(job, "Failed", "PodFailurePolicy", message)
    denied = terminated(contract.EXIT_PERMANENT, "DigestMismatch: the digest differs")
    result = cache_status(bound(claim), failed_job, fill_pods=(fill_pod(job, pull=denied),))
    assert result["caches"][0]["state"] == status.CACHE_FAILED
    ready = status.condition(result, "Ready")
    assert ready is not None
    assert ready["reason"] == "CacheFillFailed"
    assert optimized(result)["status"] == "Unknown"
    assert "optimization" not in result


def test_an_evicted_step_is_retried_not_reported() -> None:
    """A step killed with its pod (DisruptionTarget) while the Job goes on is no failure of the step."""
    claim, job = rendered_pair()
    evicted = fill_pod(job, terminated(137, reason="Error"), suffix="first")
    result = cache_status(bound(claim), job, fill_pods=(evicted, fill_pod(job)))
    assert result["caches"][0]["state"] == status.CACHE_FILLING
    assert optimized(result)["status"] == "Unknown"


def test_only_this_very_jobs_pod_reports() -> None:
    claim, job = rendered_pair()
    namesake = fill_pod(job, reported())
    namesake["metadata"]["ownerReferences"][0]["uid"] = "uid-of-a-deleted-job"
    result = cache_status(bound(claim), finished(job), fill_pods=(namesake,))
    assert "optimization" not in result
    assert optimized(result)["status"] == "Unknown"


def test_the_report_stays_once_the_fill_pod_is_gone_and_is_not_another_caches() -> None:
    claim, job = rendered_pair()
    first = cache_status(bound(claim), finished(job), fill_pods=(fill_pod(job, reported()),))
    later = cache_status(bound(claim), finished(job), previous=first)  # the pod was garbage-collected
    assert later["optimization"] == first["optimization"]
    assert later["conditions"] == first["conditions"]
    # Other settings are another cache: its report is its own fill pod's, not this one's.
    claim2, job2 = rendered_pair(**OTHER_GATE)
    other = cache_status(bound(claim2), finished(job2), previous=first, **OTHER_GATE)
    assert "optimization" not in other


def replica_of(deployment: dict[str, Any]) -> dict[str, Any]:
    template = deployment["spec"]["template"]
    return {
        "kind": "Pod",
        "metadata": {"name": "iris-mlp-x", "labels": dict(template["metadata"]["labels"])},
        "spec": copy.deepcopy(template["spec"]),
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {"name": contract.SERVER_CONTAINER_NAME, "ready": True, "state": {"running": {}}}
            ],
        },
    }


# --- the executor ---------------------------------------------------------------------------------


def test_the_executor_writes_the_fill_pods_report_once_then_nothing() -> None:
    kube = MemoryKube()
    kube.secrets[("ml", "s3-credentials")] = AWS_KEYS
    kube.create_md(md_body())
    name = name_of()
    ctl = controller(kube)
    run(ctl, KEY)
    kube.edit("PersistentVolumeClaim", "ml", name, lambda o: o.update(bound(o)))
    job = kube.objects[("Job", "ml", name)]
    kube.objects[("Pod", "ml", f"{name}-x7k2p")] = fill_pod(job, reported())
    kube.edit("Job", "ml", name, lambda o: o.update(finished(o)))
    assert run(ctl, KEY).applied == ("Deployment/iris-mlp",)
    md_status = kube.objects[("ModelDeployment", "ml", "iris-mlp")]["status"]
    assert md_status["optimization"] == {"result": contract.REASON_OPTIMIZED, **REPORT}
    kube.calls.clear()
    run(ctl, KEY)
    assert kube.writes() == []
