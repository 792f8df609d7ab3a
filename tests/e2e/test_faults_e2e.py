"""Faults the operator and the model server survive, on the real cluster: kube-apiserver restarted in the
middle of a rollout, the operator SIGKILLed while ModelDeployments are being created, and a model server
OOM-killed by its memory limit. (The S3 server stopping under a pull: test_pull_faults_e2e.py.)"""

from __future__ import annotations

import io
import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import modelplane_contract as contract
import numpy as np
import pytest
from modelplane import children as child_kinds
from modelplane import render, spec
from modelplane.render.settings import RenderSettings

from tests.support.cluster import Cluster, make, wait_until
from tests.support.examples import credentials_secret
from tests.support.modeldeployments import (
    children,
    condition,
    md,
    model_deployment,
    predict_v1,
    s3_model_deployment,
    s3_model_spec,
    wait_ready,
    wait_reason,
    wait_service,
)
from tests.support.models import SklearnModel
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e


@pytest.mark.exclusive
def test_kube_apiserver_restarted_mid_rollout_the_operator_reconnects_and_converges(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server, iris_models: dict[str, SklearnModel]
) -> None:
    v1, v2 = iris_models["v1"], iris_models["v2"]
    name = "apiserver"
    cluster.apply([credentials_secret(s3), s3_model_deployment(name, v1, replicas=2)], namespace)
    wait_ready(cluster, namespace, name)
    cluster.apply(s3_model_deployment(name, v2, replicas=2), namespace)
    wait_until(
        "the rollout to v2 to have started",
        lambda: (
            condition(md(cluster, namespace, name), "Progressing").get("reason") != "RolloutComplete" or None
        ),
        timeout=60,
        interval=0.2,
    )
    # Every watch of the operator breaks here; nothing about the rollout is lost.
    make("apiserver-restart")
    obj = wait_ready(cluster, namespace, name, timeout=300)
    assert obj["status"]["stable"]["uri"] == v2.uri
    wait_service(cluster, namespace, name)
    assert predict_v1(cluster, namespace, name, name, v2.sample) == v2.expected()
    # Only a watch re-established after the restart sees this change (the operator's resync is an hour).
    cluster.apply(s3_model_deployment(name, v2, replicas=1), namespace)
    obj = wait_ready(cluster, namespace, name, timeout=120)
    assert obj["status"]["ready"] == "1/1"
    [deployment] = children(cluster, namespace, name, "deployment")
    assert deployment["spec"]["replicas"] == 1
    assert not children(cluster, namespace, name, "poddisruptionbudget")  # pruned at 1 replica


STOPPED_MODELS = 50


def _stopped(index: int, model: SklearnModel) -> dict[str, Any]:
    # replicas 0: fifty of them fit any node; the operator still renders and applies every child.
    return model_deployment(f"md-{index:02d}", {"model": s3_model_spec(model), "replicas": 0})


def _owned_children(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    """Every object of an applied child kind in NAMESPACE carrying our name label."""
    plurals = ",".join(row.plural for row in child_kinds.applied_kinds() if row.requires_crd is None)
    out = cluster.kubectl("get", plurals, "-n", namespace, "-l", "modelplane.io/name", "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


@pytest.mark.exclusive
def test_operator_sigkilled_while_models_are_created_converges_without_duplicates_or_orphans(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server, iris_models: dict[str, SklearnModel]
) -> None:
    v1 = iris_models["v1"]
    bodies = [_stopped(i, v1) for i in range(STOPPED_MODELS)]
    pid_file = operator.parent / "operator.pid"  # make operator-up keeps it beside the log
    cluster.apply(credentials_secret(s3), namespace)
    created: list[str] = []

    def create_one_by_one() -> None:
        for body in bodies:
            cluster.apply(body, namespace)
            created.append(body["metadata"]["name"])

    with ThreadPoolExecutor(max_workers=1) as pool:
        creating = pool.submit(create_one_by_one)
        try:
            wait_until(
                "the operator to have converged a few ModelDeployments",
                lambda: len(_converged(cluster, namespace)) >= 3 or None,
                timeout=60,
                interval=0.1,
            )
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGKILL)
            created_at_kill = len(created)
            wait_until(
                "the operator to be gone", lambda: not Path(f"/proc/{pid}").exists(), timeout=30, interval=0.1
            )
            creating.result(timeout=300)  # the rest are created while no operator runs
        finally:
            make("operator-up")
    assert created_at_kill < STOPPED_MODELS, (
        "every ModelDeployment was created before the operator was killed"
    )
    wait_until(
        f"all {STOPPED_MODELS} ModelDeployments converged",
        lambda: len(_converged(cluster, namespace)) == STOPPED_MODELS or None,
        timeout=240,
    )
    live = {obj["metadata"]["name"]: obj for obj in _mds(cluster, namespace)}
    expected: set[tuple[str, str, str]] = set()
    for obj in live.values():
        parsed = spec.parse(obj)
        expected |= {
            (m["kind"], m["metadata"]["name"], obj["metadata"]["name"])
            for m in render.children(parsed, RenderSettings())
        }
    found: list[tuple[str, str, str]] = []
    for child in _owned_children(cluster, namespace):
        owner_name = child["metadata"]["labels"]["modelplane.io/name"]
        owners = [
            ref for ref in child["metadata"].get("ownerReferences") or [] if ref["kind"] == "ModelDeployment"
        ]
        # No orphan: every child is owned by exactly one live ModelDeployment, the one its label names.
        assert [(ref["name"], ref["uid"]) for ref in owners] == [
            (owner_name, live[owner_name]["metadata"]["uid"])
        ], child["metadata"]
        found.append((child["kind"], child["metadata"]["name"], owner_name))
    assert len(found) == len(set(found))  # no duplicate
    assert set(found) == expected
    # Nor a second rollout: each Deployment was written once as it is (generation 1), one ReplicaSet each.
    deployments = [c for c in _owned_children(cluster, namespace) if c["kind"] == "Deployment"]
    assert {d["metadata"]["name"]: d["metadata"]["generation"] for d in deployments} == dict.fromkeys(live, 1)

    def replica_set_owners() -> list[str]:
        out = cluster.kubectl("get", "replicasets", "-n", namespace, "-o", "json").stdout
        return sorted(
            ref["name"] for rs in json.loads(out)["items"] for ref in rs["metadata"]["ownerReferences"]
        )

    wait_until("one ReplicaSet per Deployment", lambda: replica_set_owners() == sorted(live), timeout=60)


def _mds(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(
        cluster.kubectl("get", "md", "-n", namespace, "-o", "json").stdout
    )["items"]
    return items


def _converged(cluster: Cluster, namespace: str) -> set[str]:
    """The ModelDeployments whose status is written for their generation and says they are Stopped."""
    return {
        obj["metadata"]["name"]
        for obj in _mds(cluster, namespace)
        if (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
        and condition(obj, "Ready").get("reason") == "Stopped"
    }


OOM_LIMIT = "400Mi"
BALLAST_BYTES = 1 << 30  # allocated (decompressed) when the model loads: far past the limit


def test_a_model_server_oom_killed_by_its_memory_limit_says_oomkilled_and_the_limit(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server, iris_models: dict[str, SklearnModel]
) -> None:
    v1 = iris_models["v1"]
    # The iris classifier carrying a 1 GiB array: a few MiB compressed on the store, 1 GiB once loaded.
    estimator = v1.estimator.__class__(**v1.estimator.get_params())
    estimator.__dict__.update(v1.estimator.__dict__)
    estimator.ballast_ = np.zeros(BALLAST_BYTES // 8)
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer, compress=3)
    key = f"faults/{namespace}/oom.joblib"
    digest = s3.upload(key, buffer.getvalue())
    model = SklearnModel(s3.bucket, key, digest, v1.sample, estimator)
    name = "oom"
    resources = {"requests": {"cpu": "100m", "memory": OOM_LIMIT}, "limits": {"memory": OOM_LIMIT}}
    cluster.apply(
        [credentials_secret(s3), s3_model_deployment(name, model, runtime={"resources": resources})],
        namespace,
    )
    try:
        obj = wait_reason(cluster, namespace, name, {"ServerOOMKilled"}, timeout=240)
    finally:
        s3.client().delete_object(Bucket=s3.bucket, Key=key)
    ready = condition(obj, "Ready")
    assert ready["status"] == "False"
    assert "OOMKilled" in ready["message"]
    assert f"memory limit of {OOM_LIMIT}" in ready["message"]
    assert "spec.runtime.resources.limits.memory" in ready["message"]
    assert condition(obj, "Degraded")["reason"] == "ServerOOMKilled"
    [pod] = children(cluster, namespace, name, "pod")
    [server] = [c for c in pod["status"]["containerStatuses"] if c["name"] == contract.SERVER_CONTAINER_NAME]
    last = (server.get("lastState") or {}).get("terminated") or server["state"].get("terminated")
    assert last["reason"] == "OOMKilled", server
