"""status.compute from observed children and pods: the conditions users see."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import modelplane_contract as contract
import yaml
from modelplane import render, spec, status

from tests.operator.test_render import GOLDEN, SETTINGS

NOW = datetime(2026, 11, 23, 20, 0, 0, tzinfo=UTC)
LATER = datetime(2026, 11, 23, 20, 5, 0, tzinfo=UTC)


def md(case: str = "sklearn-s3", **changes: Any) -> spec.ModelDeployment:
    body = yaml.safe_load((GOLDEN / f"{case}.input.yaml").read_text())
    body["spec"].update(changes)
    return spec.parse(body)


def deployment(
    ready: int, replicas: int, *, updated: int | None = None, generation: int = 1, observed: int = 1
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": replicas if updated is None else updated,
            "readyReplicas": ready,
        },
    }


def pod(
    model: spec.ModelDeployment, *, init: dict[str, Any] | None = None, **status_fields: Any
) -> dict[str, Any]:
    """A pod of the stable track as the rendered Deployment would make it."""
    [dep] = [m for m in render.children(model, SETTINGS) if m["kind"] == "Deployment"]
    pod_status: dict[str, Any] = dict(status_fields)
    if init is not None:
        pod_status["initContainerStatuses"] = [{"name": contract.PULL_CONTAINER_NAME, **init}]
    return {
        "metadata": dep["spec"]["template"]["metadata"],
        "spec": dep["spec"]["template"]["spec"],
        "status": pod_status,
    }


def conditions(result: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in result["conditions"]}


def test_all_ready() -> None:
    model = md()
    result = status.compute(model, status.Observed(deployments={"stable": deployment(2, 2)}), {}, NOW)
    assert conditions(result) == {
        "Ready": ("True", "AllReplicasReady"),
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("False", "RolloutComplete"),
        "Degraded": ("False", "AsExpected"),
    }
    assert result["observedGeneration"] == 3
    assert result["ready"] == "2/2"
    assert result["url"] == "http://iris.ml.svc.cluster.local"
    assert result["grpcUrl"] == "iris.ml.svc.cluster.local:8081"
    assert result["selector"] == "modelplane.io/name=iris"
    assert "phase" not in result


def test_permanent_pull_failure_is_reported_with_the_pulls_own_line() -> None:
    model = md()
    line = contract.format_termination_message(
        contract.REASON_NOT_FOUND, "s3://models/iris/model.joblib: no such key"
    )
    failing = pod(
        model,
        init={
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": contract.EXIT_PERMANENT, "message": line}},
        },
    )
    observed = status.Observed(deployments={"stable": deployment(0, 2)}, pods=[failing])
    result = status.compute(model, observed, {}, NOW)
    ready = status.condition(result, "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "ModelPullFailed")
    assert ready["message"] == line
    assert conditions(result)["Degraded"] == ("True", "ModelPullFailed")
    assert conditions(result)["Progressing"] == ("False", "ModelPullFailed")


def test_digest_mismatch_has_its_own_reason() -> None:
    model = md()
    line = contract.format_termination_message(
        contract.REASON_DIGEST_MISMATCH, "expected sha256:ab.. got sha256:cd.."
    )
    failing = pod(
        model, init={"state": {"terminated": {"exitCode": contract.EXIT_PERMANENT, "message": line}}}
    )
    result = status.compute(
        model, status.Observed(deployments={"stable": deployment(0, 2)}, pods=[failing]), {}, NOW
    )
    assert conditions(result)["Ready"] == ("False", "DigestMismatch")


def test_transient_pull_failure_is_retrying_not_permanent() -> None:
    model = md()
    line = contract.format_termination_message(contract.REASON_TRANSIENT, "connection reset")
    retrying = pod(
        model,
        init={
            "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": contract.EXIT_TRANSIENT, "message": line}},
        },
    )
    result = status.compute(
        model, status.Observed(deployments={"stable": deployment(0, 2)}, pods=[retrying]), {}, NOW
    )
    assert conditions(result)["Ready"] == ("False", "ModelPulling")
    assert conditions(result)["Degraded"] == ("False", "AsExpected")
    assert "retrying" in (status.condition(result, "Ready") or {})["message"]


def test_a_failure_of_an_old_revision_is_history() -> None:
    old = md(model={"uri": "s3://models/iris/old.joblib", "format": "sklearn"})
    line = contract.format_termination_message(contract.REASON_NOT_FOUND, "gone")
    stale = pod(old, init={"state": {"terminated": {"exitCode": contract.EXIT_PERMANENT, "message": line}}})
    result = status.compute(
        md(), status.Observed(deployments={"stable": deployment(2, 2)}, pods=[stale]), {}, NOW
    )
    assert conditions(result)["Ready"] == ("True", "AllReplicasReady")


def test_crashing_server_is_never_ready() -> None:
    model = md()
    crashing = pod(
        model,
        containerStatuses=[
            {
                "name": contract.SERVER_CONTAINER_NAME,
                "ready": False,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": "ValueError: bad model"}},
            }
        ],
    )
    # The Deployment still counts the earlier Ready pod; the crash must still show.
    result = status.compute(
        model, status.Observed(deployments={"stable": deployment(1, 2)}, pods=[crashing]), {}, NOW
    )
    assert conditions(result)["Ready"] == ("False", "ServerCrashLoop")
    assert conditions(result)["Degraded"] == ("True", "ServerCrashLoop")


def oom_killed_server(model: spec.ModelDeployment, **state: Any) -> dict[str, Any]:
    return pod(
        model,
        containerStatuses=[
            {"name": contract.SERVER_CONTAINER_NAME, "ready": False, "restartCount": 2, **state}
        ],
    )


OOM_KILLED = {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}


def test_an_oom_killed_server_names_oomkilled_and_its_memory_limit() -> None:
    model = md(runtime={"resources": {"limits": {"memory": "300Mi"}}})
    for state in (
        {"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": OOM_KILLED},
        {"state": {"running": {}}, "lastState": OOM_KILLED},  # restarted, loading again
        {"state": OOM_KILLED},
    ):
        result = status.compute(
            model,
            status.Observed(
                deployments={"stable": deployment(0, 2)}, pods=[oom_killed_server(model, **state)]
            ),
            {},
            NOW,
        )
        ready = status.condition(result, "Ready") or {}
        assert (ready["status"], ready["reason"]) == ("False", "ServerOOMKilled"), state
        assert "OOMKilled (2 restart(s))" in ready["message"]
        assert "memory limit of 300Mi" in ready["message"]
        assert "spec.runtime.resources.limits.memory" in ready["message"]
        assert conditions(result)["Degraded"] == ("True", "ServerOOMKilled")


def test_an_oom_kill_without_a_limit_says_the_node_ran_out() -> None:
    model = md()
    failing = oom_killed_server(
        model, state={"waiting": {"reason": "CrashLoopBackOff"}}, lastState=OOM_KILLED
    )
    for container in failing["spec"]["containers"]:
        container.pop("resources", None)
    result = status.compute(
        model, status.Observed(deployments={"stable": deployment(0, 2)}, pods=[failing]), {}, NOW
    )
    ready = status.condition(result, "Ready") or {}
    assert ready["reason"] == "ServerOOMKilled"
    assert "no memory limit is set" in ready["message"]


def test_a_ready_server_that_was_once_oom_killed_is_ready() -> None:
    model = md()
    recovered = pod(
        model,
        containerStatuses=[
            {
                "name": contract.SERVER_CONTAINER_NAME,
                "ready": True,
                "restartCount": 1,
                "state": {"running": {}},
                "lastState": OOM_KILLED,
            }
        ],
    )
    result = status.compute(
        model, status.Observed(deployments={"stable": deployment(2, 2)}, pods=[recovered]), {}, NOW
    )
    assert conditions(result)["Ready"] == ("True", "AllReplicasReady")


def test_unschedulable_says_why() -> None:
    model = md("gpu")
    pending = pod(
        model,
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
            }
        ],
    )
    result = status.compute(
        model, status.Observed(deployments={"stable": deployment(0, 1)}, pods=[pending]), {}, NOW
    )
    ready = status.condition(result, "Ready") or {}
    assert (ready["reason"], ready["message"]) == (
        "Unschedulable",
        (
            "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. "
            "(each pod needs 1 nvidia.com/gpu (spec.runtime.gpus))"
        ),
    )


def test_stopped_is_reported_as_such() -> None:
    model = md(replicas=0)
    result = status.compute(model, status.Observed(deployments={"stable": deployment(0, 0)}), {}, NOW)
    assert conditions(result)["Ready"] == ("False", "Stopped")
    assert result["ready"] == "0/0"


def test_rollout_in_progress_then_ready_with_history() -> None:
    model = md()
    first = status.compute(model, status.Observed(deployments={"stable": deployment(2, 2)}), {}, NOW)
    changed = md(model={"uri": "s3://models/iris/v2.joblib", "format": "sklearn", "version": "2"})
    rolling = deployment(2, 2, updated=1, generation=2, observed=2)
    second = status.compute(changed, status.Observed(deployments={"stable": rolling}), first, LATER)
    assert conditions(second)["Ready"] == ("False", "RolloutInProgress")
    assert conditions(second)["Available"] == ("True", "MinimumReplicasAvailable")
    assert conditions(second)["Progressing"] == ("True", "RolloutInProgress")
    assert second["history"][0]["uri"] == "s3://models/iris/model.joblib"
    assert second["history"][0]["until"] == "2026-11-23T20:05:00Z"
    done = status.compute(
        changed,
        status.Observed(deployments={"stable": deployment(2, 2, generation=2, observed=2)}),
        second,
        LATER,
    )
    assert conditions(done)["Ready"] == ("True", "AllReplicasReady")
    assert len(done["history"]) == 1


def test_rollout_is_not_over_while_a_pod_of_the_previous_model_still_drains() -> None:
    old = md()
    new = md(model={"uri": "s3://models/iris/v2.joblib", "format": "sklearn", "version": "2"})
    serving = [{"name": contract.SERVER_CONTAINER_NAME, "state": {"running": {}}}]
    draining = pod(old, phase="Running", containerStatuses=serving)
    draining["metadata"] = {**draining["metadata"], "deletionTimestamp": "2026-11-23T20:04:59Z"}
    # The Deployment already counts its rollout complete: the old pod is terminating, not counted.
    complete = status.Observed(
        deployments={"stable": deployment(2, 2, generation=2, observed=2)},
        pods=[pod(new, phase="Running"), pod(new, phase="Running"), draining],
    )
    result = status.compute(new, complete, {}, LATER)
    assert conditions(result)["Ready"] == ("False", "RolloutInProgress")
    message = (status.condition(result, "Ready") or {})["message"]
    assert "1 pod(s) of the previous revision still draining" in message
    evicted = pod(old, phase="Failed", containerStatuses=serving)  # ended: it answers nothing
    gone = status.Observed(deployments=complete.deployments, pods=[*complete.pods[:2], evicted])
    assert conditions(status.compute(new, gone, result, LATER))["Ready"] == ("True", "AllReplicasReady")


def test_a_running_vllm_pod_of_the_current_model_is_ready_not_a_previous_revision() -> None:
    # vLLM's server container is not the runtime's: it must still mark the revision it serves.
    model = md("vllm")
    serving = [{"name": contract.SERVER_CONTAINER_NAME, "state": {"running": {}}, "ready": True}]
    observed = status.Observed(
        deployments={"stable": deployment(1, 1)},
        pods=[pod(model, phase="Running", containerStatuses=serving)],
    )
    result = status.compute(model, observed, {}, NOW)
    assert conditions(result)["Ready"] == ("True", "AllReplicasReady"), result["conditions"]


def test_transition_time_kept_while_nothing_changes() -> None:
    model = md()
    observed = status.Observed(deployments={"stable": deployment(2, 2)})
    first = status.compute(model, observed, {}, NOW)
    again = status.compute(model, observed, first, LATER)
    assert again == first  # a steady state computes the same status, so nothing is written


def test_canary_warming_keeps_stable_and_is_not_ready() -> None:
    model = md("canary-warming")
    observed = status.Observed(deployments={"stable": deployment(5, 5), "canary": deployment(0, 1)})
    result = status.compute(model, observed, {}, NOW)
    assert conditions(result)["Ready"] == ("False", "RolloutInProgress")
    assert result["canary"]["uri"] == "s3://models/iris/v2.joblib"
    assert not status.canary_is_ready(model, observed.deployments["canary"])
    ready_observed = status.Observed(deployments={"stable": deployment(4, 4), "canary": deployment(1, 1)})
    assert status.canary_is_ready(model, ready_observed.deployments["canary"])
    result = status.compute(model, ready_observed, result, LATER)
    assert conditions(result)["Ready"] == ("True", "AllReplicasReady")
    assert result["ready"] == "5/5"


def test_keda_missing_is_a_clear_condition() -> None:
    for case, metric in (
        ("autoscaling-concurrency", "concurrency"),
        ("autoscaling-llm-waiting", "waitingRequests"),
    ):
        model = md(case)
        result = status.compute(model, status.Observed(deployments={"stable": deployment(1, 1)}), {}, NOW)
        degraded = status.condition(result, "Degraded") or {}
        assert degraded["reason"] == "AutoscalerUnavailable"
        assert f"spec.autoscaling.metric {metric} needs KEDA" in degraded["message"]


def test_missing_credentials_secret() -> None:
    model = md()
    observed = status.Observed(deployments={"stable": deployment(0, 2)}, secret_found=False)
    ready = status.condition(status.compute(model, observed, {}, NOW), "Ready") or {}
    assert ready["reason"] == "CredentialsSecretNotFound"
    assert "s3-credentials" in ready["message"]


def test_served_digest_from_a_successful_pull() -> None:
    model = md()
    digest = "sha256:" + "cd" * 32
    done = pod(
        model,
        init={
            "state": {
                "terminated": {
                    "exitCode": 0,
                    # What `modelplane-runtime pull` writes on success (tests/runtime/pull checks that side).
                    "message": contract.format_termination_message(
                        contract.REASON_PULLED, f"s3://models/iris/model.skops {digest} (1234 bytes)"
                    ),
                }
            }
        },
    )
    result = status.compute(
        model, status.Observed(deployments={"stable": deployment(2, 2)}, pods=[done]), {}, NOW
    )
    assert result["servedDigest"] == digest


def test_a_revisions_ready_pods_never_count_the_previous_templates_pods() -> None:
    mid_rollout = deployment(1, 1, updated=1)
    mid_rollout["status"]["replicas"] = 2  # one pod of the new template (not Ready), one of the old (Ready)
    after = deployment(1, 1)
    unseen = deployment(1, 1, generation=2, observed=1)  # the controller has not seen the new template
    model = md()
    computed = [
        status.compute(model, status.Observed(deployments={"stable": dep}), {}, NOW)
        for dep in (mid_rollout, after, unseen)
    ]
    revisions = [result["stable"]["readyReplicas"] for result in computed]
    assert revisions == [0, 1, 0]


def _optimized_pod(model: spec.ModelDeployment, reason: str, report: dict[str, Any]) -> dict[str, Any]:
    """A pod whose pull and optimize step finished, as the kubelet reports them."""
    result = pod(model)
    pulled = "sha256:" + "cd" * 32
    result["status"]["initContainerStatuses"] = [
        {
            "name": contract.PULL_CONTAINER_NAME,
            "state": {
                "terminated": {
                    "exitCode": 0,
                    "message": f"Pulled: s3://models/iris/mlp.joblib {pulled} (9 bytes)",
                }
            },
        },
        {
            "name": contract.OPTIMIZE_CONTAINER_NAME,
            "state": {"terminated": {"exitCode": 0, "message": f"{reason}: {json.dumps(report)}"}},
        },
    ]
    return result


REPORT = {
    "message": "serving the onnx + int8 form: label agreement 0.9980 on 512 samples",
    "applied": ["onnx", "int8"],
    "original": {"digest": "sha256:" + "cd" * 32, "bytes": 163265, "p50Batch1Microseconds": 410.0,
                 "p50Batch64Microseconds": 900.0},
    "optimized": {"digest": "sha256:" + "ef" * 32, "bytes": 8855, "p50Batch1Microseconds": 30.0,
                  "p50Batch64Microseconds": 60.0},
    "gate": {"passed": True, "agreement": 0.998, "minAgreement": 0.98, "samples": 512},
}  # fmt: skip


def test_optimized_form_is_the_served_digest_with_the_original_beside_it() -> None:
    model = md("sklearn-optimize")
    observed = status.Observed(
        deployments={"stable": deployment(2, 2)}, pods=[_optimized_pod(model, "Optimized", REPORT)]
    )
    result = status.compute(model, observed, {}, NOW)
    assert result["servedDigest"] == "sha256:" + "ef" * 32
    assert result["originalDigest"] == "sha256:" + "cd" * 32
    assert result["optimization"] == {"result": "Optimized", **REPORT}
    assert conditions(result)["Optimized"] == ("True", "Optimized")
    assert conditions(result)["Ready"] == ("True", "AllReplicasReady")
    # A steady state writes nothing: the same observation gives the same status.
    assert status.compute(model, observed, result, LATER) == result


def test_rejected_optimization_serves_the_original_and_says_so_with_the_figure() -> None:
    model = md("sklearn-optimize")
    rejected = {
        **REPORT,
        "message": "the onnx + int8 form fell below the gate (label agreement 0.9531 is below "
        "minAgreement 0.98): serving the original",
        "gate": {"passed": False, "agreement": 0.9531, "minAgreement": 0.98, "samples": 512},
    }
    observed = status.Observed(
        deployments={"stable": deployment(2, 2)},
        pods=[_optimized_pod(model, "OptimizationRejected", rejected)],
    )
    result = status.compute(model, observed, {}, NOW)
    assert result["servedDigest"] == "sha256:" + "cd" * 32
    assert "originalDigest" not in result
    optimized = next(c for c in result["conditions"] if c["type"] == "Optimized")
    assert (optimized["status"], optimized["reason"]) == ("False", "OptimizationRejected")
    assert "label agreement 0.9531" in optimized["message"]
    assert conditions(result)["Ready"] == ("True", "AllReplicasReady")


def test_optimizing_pod_is_reported_and_unknown_until_a_step_finished() -> None:
    model = md("sklearn-optimize")
    running = pod(model)
    running["status"]["initContainerStatuses"] = [
        {"name": contract.PULL_CONTAINER_NAME, "state": {"terminated": {"exitCode": 0, "message": ""}}},
        {
            "name": contract.OPTIMIZE_CONTAINER_NAME,
            "state": {"running": {"startedAt": "2026-11-23T20:00:00Z"}},
        },
    ]
    result = status.compute(
        model, status.Observed(deployments={"stable": deployment(0, 2)}, pods=[running]), {}, NOW
    )
    assert conditions(result)["Ready"] == ("False", "ModelOptimizing")
    assert conditions(result)["Optimized"] == ("Unknown", "Optimizing")
    assert "optimization" not in result


def test_a_report_of_other_optimize_settings_is_not_this_revisions() -> None:
    model = md("sklearn-optimize")
    old = _optimized_pod(model, "Optimized", REPORT)
    changed = md(
        "sklearn-optimize",
        model={
            **yaml.safe_load((GOLDEN / "sklearn-optimize.input.yaml").read_text())["spec"]["model"],
            "optimize": {"onnx": True},
        },
    )
    result = status.compute(
        changed, status.Observed(deployments={"stable": deployment(2, 2)}, pods=[old]), {}, NOW
    )
    assert "optimization" not in result
    assert conditions(result)["Optimized"] == ("Unknown", "Optimizing")
