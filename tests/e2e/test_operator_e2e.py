"""The operator against the real local cluster: real pods running the runtime image, real S3 pulls."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from modelplane.consumers import LABEL_CONSUMER

from tests.e2e.conftest import OPERATOR_USER
from tests.support.cluster import REPO_ROOT, Cluster, make, wait_until
from tests.support.examples import ZERO_DIGEST, credentials_secret, example, with_local_credentials
from tests.support.modeldeployments import (
    assert_waits_for_a_gpu,
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
from tests.support.models import SklearnModel, XGBoostModel
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e


def printer_columns(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    out = cluster.kubectl("get", "md", name, "-n", namespace, "-o", "wide").stdout.splitlines()
    header, row = out[0], out[1]
    starts = [header.index(col) for col in header.split()]
    cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], len(row) + 1], strict=True)]
    return dict(zip(header.split(), cells, strict=True))


def test_invalid_specs_are_rejected_naming_the_field(cluster: Cluster, namespace: str) -> None:
    good = {"uri": "s3://models/iris/model.joblib", "format": "sklearn"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": {**good, "uri": "ftp://x/y"}}, "spec.model.uri"),
        ({"model": {**good, "format": "keras"}}, "spec.model.format"),
        ({"model": {**good, "digest": "md5:abc"}}, "spec.model.digest"),
        ({"model": good, "replicas": -1}, "spec.replicas"),
        ({"model": good, "autoscaling": {"minReplicas": 4, "maxReplicas": 2}}, "spec.autoscaling"),
        (
            {"model": good, "autoscaling": {"minReplicas": 0, "maxReplicas": 2, "metric": "cpu"}},
            "minReplicas",
        ),
        ({"model": good, "rollout": {"canary": {"model": good}}}, "spec.rollout"),
        (
            {
                "model": good,
                "rollout": {"strategy": "Canary", "canary": {"model": good, "trafficPercent": 120}},
            },
            "spec.rollout.canary.trafficPercent",
        ),
        ({"model": good, "runtime": {"gpus": -1}}, "spec.runtime.gpus"),
        ({"model": good, "runtime": {"protocols": ["soap"]}}, "spec.runtime.protocols"),
        ({"model": {**good, "credentialsSecret": "Not_A_Name"}}, "spec.model.credentialsSecret"),
        ({"model": {**good, "uri": "pvc://claim/dir", "digest": "sha256:" + "a" * 64}}, "spec.model"),
        (
            {
                "model": good,
                "rollout": {
                    "strategy": "Canary",
                    "canary": {"model": {**good, "uri": "pvc://claim/dir", "digest": "sha256:" + "a" * 64}},
                },
            },
            "spec.rollout.canary.model.digest",
        ),
        ({"model": {"uri": "s3://models/k"}}, "spec.model.format"),
    ]
    for index, (spec, field) in enumerate(cases):
        body = model_deployment(f"bad-{index}", spec)
        result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=False)
        assert result.returncode != 0, f"accepted: {spec}"
        assert field in result.stderr, f"{field} not named in: {result.stderr}"
    assert cluster.kubectl("get", "md", "-n", namespace, "-o", "name").stdout.strip() == ""


def test_sklearn_from_s3_end_to_end(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server, iris_models: dict[str, SklearnModel]
) -> None:
    v1 = iris_models["v1"]
    docs = with_local_credentials(example("sklearn-s3.yaml", **{ZERO_DIGEST: v1.digest}), s3)
    cluster.apply(docs, namespace)
    obj = wait_ready(cluster, namespace, "iris")
    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["url"] == f"http://iris.{namespace}.svc.cluster.local"
    assert status["ready"] == "1/1"
    columns = printer_columns(cluster, namespace, "iris")
    assert columns["FORMAT"] == "sklearn"
    assert columns["VERSION"] == "1"
    assert columns["READY"] == "1/1"
    assert columns["REASON"] == "AllReplicasReady"
    assert columns["URL"] == status["url"]
    assert columns["MESSAGE"]
    for kind in ("deployment", "service"):
        [child] = children(cluster, namespace, "iris", kind)
        [owner] = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "ModelDeployment",
            "iris",
            obj["metadata"]["uid"],
            True,
        )
    wait_service(cluster, namespace, "iris")
    assert predict_v1(cluster, namespace, "iris", "iris", v1.sample) == v1.expected()
    metrics = _operator_metrics()
    assert metrics['modelplane_operator_reconciles_total{result="ok"}'] > 0
    assert metrics['modelplane_operator_modeldeployments{ready="True"}'] >= 1
    assert metrics["modelplane_operator_reconcile_duration_seconds_count"] > 0


def _operator_metrics() -> dict[str, float]:
    """The host operator's metrics endpoint (make operator-up serves it on OPERATOR_METRICS_PORT)."""

    with urllib.request.urlopen("http://127.0.0.1:18480/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("modelplane_operator_")
    }


@pytest.mark.exclusive
def test_examples_run_and_the_gpu_one_says_why_it_waits(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server, xgboost_model: XGBoostModel
) -> None:
    cluster.apply(example("xgboost-http.yaml"), namespace)
    cluster.apply([credentials_secret(s3), *example("gpu.yaml")], namespace)

    wait_ready(cluster, namespace, "xgboost-http")
    wait_service(cluster, namespace, "xgboost-http")
    predictions = predict_v1(cluster, namespace, "xgboost-http", "xgboost-http", xgboost_model.sample)
    assert np.allclose(predictions, xgboost_model.expected(), atol=1e-5), predictions
    assert_waits_for_a_gpu(cluster, namespace, "gpu-model")


def test_uri_change_rolls_the_deployment_and_records_history(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server, iris_models: dict[str, SklearnModel]
) -> None:
    v1, v2 = iris_models["v1"], iris_models["v2"]
    cluster.apply([credentials_secret(s3), s3_model_deployment("roll", v1)], namespace)
    wait_ready(cluster, namespace, "roll")
    cluster.apply(s3_model_deployment("roll", v2), namespace)
    wait_until(
        "Progressing=True",
        lambda: condition(md(cluster, namespace, "roll"), "Progressing").get("status") == "True",
        timeout=60,
        interval=0.3,
    )
    obj = wait_ready(cluster, namespace, "roll")
    assert obj["status"]["stable"]["uri"] == v2.uri
    assert obj["status"]["history"][0]["uri"] == v1.uri
    assert predict_v1(cluster, namespace, "roll", "roll", v2.sample) == v2.expected()
    [deployment] = children(cluster, namespace, "roll", "deployment")
    assert deployment["metadata"]["generation"] == 2


def _replicas(cluster: Cluster, namespace: str, name: str) -> dict[str, int]:
    return {
        d["metadata"]["name"]: d["spec"]["replicas"] for d in children(cluster, namespace, name, "deployment")
    }


def test_canary_warms_up_before_the_stable_track_shrinks_then_rollback_and_promote(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server, iris_models: dict[str, SklearnModel]
) -> None:
    v1, v2 = iris_models["v1"], iris_models["v2"]
    missing = replace(v2, key="examples/does-not-exist/model.joblib")

    def canary_spec(model: SklearnModel) -> dict[str, Any]:
        return {
            "strategy": "Canary",
            "canary": {"trafficPercent": 20, "model": s3_model_spec(model)},
        }

    cluster.apply(
        [credentials_secret(s3), s3_model_deployment("cn", v1, replicas=5, rollout=canary_spec(missing))],
        namespace,
    )
    # The canary cannot become Ready (its model is missing): the stable track keeps all 5.
    wait_reason(cluster, namespace, "cn", {"ModelPullFailed"}, timeout=240)
    wait_until("5 + 1", lambda: _replicas(cluster, namespace, "cn") == {"cn": 5, "cn-canary": 1}, timeout=30)
    stable_ready = wait_until(
        "5 stable pods Ready",
        lambda: len([p for p in children(cluster, namespace, "cn", "pod") if _pod_ready(p)]) == 5 or None,
        timeout=240,
    )
    assert stable_ready
    assert _replicas(cluster, namespace, "cn") == {"cn": 5, "cn-canary": 1}

    # A canary that can start: once it is Ready, 4 stable + 1 canary.
    cluster.apply(s3_model_deployment("cn", v1, replicas=5, rollout=canary_spec(v2)), namespace)
    obj = wait_ready(cluster, namespace, "cn", timeout=300)
    assert _replicas(cluster, namespace, "cn") == {"cn": 4, "cn-canary": 1}
    assert obj["status"]["canary"]["uri"] == v2.uri
    services = {s["metadata"]["name"] for s in children(cluster, namespace, "cn", "service")}
    assert services == {"cn", "cn-stable", "cn-canary"}
    wait_service(cluster, namespace, "cn-canary")
    assert predict_v1(cluster, namespace, "cn-canary", "cn", v2.sample) == v2.expected()

    # Rollback: remove the canary -> stable only, canary children pruned.
    cluster.apply(s3_model_deployment("cn", v1, replicas=5, rollout={"strategy": "Canary"}), namespace)
    wait_ready(cluster, namespace, "cn", timeout=300)
    wait_until("canary pruned", lambda: _replicas(cluster, namespace, "cn") == {"cn": 5}, timeout=60)
    services = {s["metadata"]["name"] for s in children(cluster, namespace, "cn", "service")}
    assert services == {"cn", "cn-stable"}

    # Promote: the canary model becomes spec.model.
    cluster.apply(s3_model_deployment("cn", v2, replicas=5, rollout={"strategy": "Canary"}), namespace)
    obj = wait_ready(cluster, namespace, "cn", timeout=300)
    assert obj["status"]["stable"]["uri"] == v2.uri
    assert predict_v1(cluster, namespace, "cn", "cn", v2.sample) == v2.expected()


def _pod_ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("labels", {}).get("modelplane.io/track") != "stable":
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def test_deleted_or_edited_children_are_put_back(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server, iris_models: dict[str, SklearnModel]
) -> None:
    cluster.apply([credentials_secret(s3), s3_model_deployment("drift", iris_models["v1"])], namespace)
    wait_ready(cluster, namespace, "drift")
    [original] = children(cluster, namespace, "drift", "deployment")
    image = original["spec"]["template"]["spec"]["containers"][0]["image"]

    cluster.kubectl("delete", "deployment", "drift", "-n", namespace, "--wait=false")
    recreated = wait_until(
        "the Deployment recreated",
        lambda: next(
            (
                d
                for d in children(cluster, namespace, "drift", "deployment")
                if d["metadata"]["uid"] != original["metadata"]["uid"]
            ),
            None,
        ),
        timeout=30,
    )
    assert recreated["spec"]["template"]["spec"]["containers"][0]["image"] == image

    cluster.kubectl("set", "image", "deployment/drift", "model-server=nginx:edited", "-n", namespace)
    wait_until(
        "the image reverted",
        lambda: (
            children(cluster, namespace, "drift", "deployment")[0]["spec"]["template"]["spec"]["containers"][
                0
            ]["image"]
            == image
        ),
        timeout=30,
    )
    cluster.kubectl(
        "patch", "service", "drift", "-n", namespace, "-p", '{"spec":{"selector":{"app":"other"}}}'
    )
    wait_until(
        "the Service selector reverted",
        lambda: (
            cluster.get("service", "drift", namespace)["spec"]["selector"] == {"modelplane.io/name": "drift"}
        ),
        timeout=30,
    )
    wait_ready(cluster, namespace, "drift")
    # The scale subresource: `kubectl scale md` sets spec.replicas, and the Deployment follows.
    cluster.kubectl("scale", "md", "drift", "--replicas=2", "-n", namespace)
    wait_until("scaled to 2", lambda: _replicas(cluster, namespace, "drift") == {"drift": 2}, timeout=30)
    obj = wait_ready(cluster, namespace, "drift")
    assert obj["status"]["ready"] == "2/2"


def test_a_pull_that_really_fails_is_reported_in_kubectl_get(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server, iris_models: dict[str, SklearnModel]
) -> None:
    v1 = iris_models["v1"]
    missing = replace(v1, key="examples/missing/model.joblib")
    wrong = replace(v1, digest="sha256:" + "1" * 64)
    cluster.apply(
        [
            credentials_secret(s3),
            s3_model_deployment("missing", missing),
            s3_model_deployment("wrong-digest", wrong),
        ],
        namespace,
    )
    for name, reason in (("missing", "ModelPullFailed"), ("wrong-digest", "DigestMismatch")):
        obj = wait_reason(cluster, namespace, name, {reason}, timeout=180)
        ready = condition(obj, "Ready")
        assert ready["status"] == "False"
        [pod] = children(cluster, namespace, name, "pod")
        [pull] = pod["status"]["initContainerStatuses"]
        terminated = pull["state"].get("terminated") or pull["lastState"].get("terminated")
        pull_line = terminated["message"].strip()
        assert ready["message"] == pull_line  # the pull's own line, word for word
        assert condition(obj, "Degraded")["status"] == "True"
        columns = printer_columns(cluster, namespace, name)
        assert columns["REASON"] == reason
        assert columns["MESSAGE"] == pull_line
    assert "DigestMismatch" in condition(md(cluster, namespace, "wrong-digest"), "Ready")["message"]


def test_deleting_the_model_deployment_removes_every_child(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server, iris_models: dict[str, SklearnModel]
) -> None:
    autoscaled = s3_model_deployment(
        "gone", iris_models["v1"], autoscaling={"minReplicas": 1, "maxReplicas": 2}
    )
    cluster.apply([credentials_secret(s3), autoscaled], namespace)
    wait_ready(cluster, namespace, "gone")
    kinds = (
        "deployment",
        "service",
        "horizontalpodautoscaler",
        "poddisruptionbudget",
        "networkpolicy",
        "pod",
    )
    assert all(children(cluster, namespace, "gone", kind) for kind in kinds)
    cluster.kubectl("delete", "md", "gone", "-n", namespace, "--wait=true", timeout=120)
    wait_until(
        "every child gone",
        lambda: not any(children(cluster, namespace, "gone", kind) for kind in kinds),
        timeout=120,
    )


@pytest.mark.exclusive
def test_operator_restart_mid_rollout_converges_without_duplicates(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server, iris_models: dict[str, SklearnModel]
) -> None:
    v1, v2 = iris_models["v1"], iris_models["v2"]
    cluster.apply([credentials_secret(s3), s3_model_deployment("restart", v1, replicas=2)], namespace)
    wait_ready(cluster, namespace, "restart")
    make("operator-down")
    try:
        # Changed while no operator runs, then the operator comes back in the middle of it.
        cluster.apply(s3_model_deployment("restart", v2, replicas=2), namespace)
        make("operator-up")
        wait_until(
            "rollout started",
            lambda: (
                condition(md(cluster, namespace, "restart"), "Progressing").get("status") == "True" or None
            ),
            timeout=60,
            interval=0.3,
        )
        make("operator-down")
        make("operator-up")
    finally:
        make("operator-up")
    obj = wait_ready(cluster, namespace, "restart", timeout=300)
    assert obj["status"]["stable"]["uri"] == v2.uri
    assert [d["metadata"]["name"] for d in children(cluster, namespace, "restart", "deployment")] == [
        "restart"
    ]
    assert sorted(s["metadata"]["name"] for s in children(cluster, namespace, "restart", "service")) == [
        "restart"
    ]
    assert [
        p["metadata"]["name"] for p in children(cluster, namespace, "restart", "poddisruptionbudget")
    ] == ["restart"]
    wait_until(
        "exactly 2 pods", lambda: len(children(cluster, namespace, "restart", "pod")) == 2, timeout=120
    )


def _audit_entries(path: Path, since: float) -> list[dict[str, Any]]:
    entries = []
    with path.open() as log:
        for line in log:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            stamp = entry.get("requestReceivedTimestamp", "")
            if stamp and _epoch(stamp) >= since and entry.get("user", {}).get("username") == OPERATOR_USER:
                entries.append(entry)
    return entries


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


@pytest.mark.exclusive
def test_steady_state_writes_nothing_and_secrets_are_never_listed(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server, iris_models: dict[str, SklearnModel]
) -> None:
    audit_log = cluster.kubeconfig.parent / "logs" / "audit.log"  # beside the kubeconfig, in CACHE_DIR
    assert audit_log.exists(), "the cluster writes no audit log"
    started = time.time()
    cluster.apply(
        [
            credentials_secret(s3),
            s3_model_deployment("quiet-a", iris_models["v1"]),
            s3_model_deployment("quiet-b", iris_models["v2"], replicas=2),
        ],
        namespace,
    )
    wait_ready(cluster, namespace, "quiet-a")
    wait_ready(cluster, namespace, "quiet-b")
    # Ready settles a moment after the last pod event; give the last writes time to land, then watch.
    wait_until(
        "settled",
        lambda: all(
            condition(md(cluster, namespace, n), "Ready").get("reason") == "AllReplicasReady"
            for n in ("quiet-a", "quiet-b")
        ),
        timeout=60,
    )
    time.sleep(5)  # the audit log is written asynchronously by the apiserver (batch backend)
    window_start = time.time()
    time.sleep(60)
    time.sleep(5)
    entries = _audit_entries(audit_log, started)
    assert entries, "no audit entries of the operator's user: is it running as its ServiceAccount?"
    writes = [
        e
        for e in entries
        if e["verb"] in WRITE_VERBS
        and _epoch(e["requestReceivedTimestamp"]) >= window_start
        and e.get("objectRef", {}).get("apiGroup") != "kopf.dev"  # kopf's peering keep-alive, once a minute
        and e.get("stage") == "ResponseComplete"
        # An earlier test's namespace may still be tearing down (its pods drain): not a steady state.
        and e.get("objectRef", {}).get("namespace") in (namespace, None)
    ]
    assert not writes, [(w["verb"], w["objectRef"]) for w in writes]
    # Secrets: ever since the running operator started, by its user, only GETs of the named Secret. (The
    # audit log outlives operators: one built from other code may have run on this cluster before.)
    operator_started = operator.with_name("operator.pid").stat().st_mtime
    secret_reads = [
        e
        for e in _audit_entries(audit_log, operator_started - 1)
        if e.get("objectRef", {}).get("resource") == "secrets"
    ]
    assert secret_reads, "the operator never read the credentials Secret"
    # The one collection it reads is the consumer directory (spec.access.consumers, an earlier test's):
    # the metadata of the Secrets labelled as consumers (modelplane/consumers.py), never their keys.
    gets = [e for e in secret_reads if e["verb"] == "get"]
    lists = [e for e in secret_reads if e["verb"] != "get"]
    assert gets, "the operator never read the credentials Secret by name"
    assert all(e["objectRef"].get("name") for e in gets)  # by name
    assert all(_consumer_directory(e) for e in lists), [(e["verb"], e["requestURI"]) for e in lists]


def _consumer_directory(entry: dict[str, Any]) -> bool:
    """A LIST of the Secrets labelled as consumers, and nothing else."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(entry["requestURI"]).query)
    return entry["verb"] == "list" and query.get("labelSelector") == [LABEL_CONSUMER]


def test_cpu_autoscaler_scales_up_under_load(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server, iris_models: dict[str, SklearnModel]
) -> None:
    make("addons")  # metrics-server
    v1 = iris_models["v1"]
    docs = with_local_credentials(example("autoscaling-cpu.yaml", **{ZERO_DIGEST: v1.digest}), s3)
    cluster.apply([credentials_secret(s3), *docs], namespace)
    wait_ready(cluster, namespace, "iris-autoscaled")
    cluster_ip = cluster.get("service", "iris-autoscaled", namespace)["spec"]["clusterIP"]
    url = f"http://{cluster_ip}/v1/models/iris-autoscaled:predict"
    body = json.dumps({"instances": v1.sample * 64}).encode()
    stop = threading.Event()
    deadline = time.monotonic() + 240  # the load is bounded in time whatever happens

    def load() -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=10) as response:
                response.read()

    workers = [threading.Thread(target=load, daemon=True) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        hpa = wait_until(
            "the HPA to want more than one replica",
            lambda: (
                (h := cluster.get("hpa", "iris-autoscaled", namespace))["status"].get("desiredReplicas", 1)
                > 1
                and h
            ),
            timeout=240,
            interval=5,
        )
        assert hpa["status"]["desiredReplicas"] > 1
        wait_until(
            "the Deployment scaled up",
            lambda: cluster.get("deployment", "iris-autoscaled", namespace)["spec"]["replicas"] > 1,
            timeout=60,
        )
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    obj = md(cluster, namespace, "iris-autoscaled")
    assert obj["status"]["desiredReplicas"] > 1


def test_scaled_object_passes_a_server_side_dry_run_against_kedas_crd(
    cluster: Cluster, namespace: str, third_party_crds: set[str]
) -> None:
    assert "scaledobjects.keda.sh" in third_party_crds
    rendered = subprocess.run(
        [
            ".venv/bin/modelplane",
            "render",
            "--keda",
            "--namespace",
            namespace,
            "tests/operator/golden/autoscaling-concurrency.input.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    ).stdout
    import yaml

    [scaled] = [d for d in yaml.safe_load_all(rendered) if d["kind"] == "ScaledObject"]
    scaled["metadata"]["namespace"] = namespace
    del scaled["metadata"]["ownerReferences"]
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(scaled))
    assert "created (server dry run)" in result.stdout


@pytest.mark.exclusive
def test_two_operators_never_reconcile_at_once(
    cluster: Cluster, namespace: str, operator: Path, tmp_path: Path
) -> None:
    """kopf peering: a second operator with a higher priority takes over; the first pauses, then resumes."""
    import os

    first_log = operator
    first_offset = first_log.stat().st_size
    second_log = tmp_path / "second-operator.log"
    first_pid = (first_log.parent / "operator.pid").read_text().strip()  # make operator-up keeps both
    first_env = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{first_pid}/environ").read_text().split("\0")
        if "=" in item
    )
    env = {
        **os.environ,
        "MODELPLANE_RUNTIME_IMAGE": first_env["MODELPLANE_RUNTIME_IMAGE"],  # the same children as the first
        "KUBECONFIG": str(first_log.parent / "kubeconfig"),
        "MODELPLANE_PEERING_PRIORITY": "2000000",  # above any random default (at most 1000000)
        "MODELPLANE_METRICS_PORT": "0",
        "MODELPLANE_HEALTH_PORT": "0",
    }
    with second_log.open("w") as sink:
        second = subprocess.Popen(
            [str(REPO_ROOT / ".venv/bin/modelplane"), "run"], env=env, stdout=sink, stderr=sink
        )
    try:
        wait_until(
            "the first to pause",
            lambda: "Pausing operations in favour of" in first_log.read_text()[first_offset:],
            timeout=60,
        )
        model = {"uri": "s3://modelplane/examples/iris/model.joblib", "format": "sklearn"}
        cluster.apply(model_deployment("peered", {"model": model}), namespace)
        wait_until(
            "the second to reconcile",
            lambda: f"{namespace}/peered: applied" in second_log.read_text(),
            timeout=60,
        )
        assert f"{namespace}/peered" not in first_log.read_text()[first_offset:]
    finally:
        second.terminate()
        second.wait(timeout=60)
    wait_until(
        "the first to resume",
        lambda: "Resuming operations" in first_log.read_text()[first_offset:],
        timeout=90,
    )
    cluster.kubectl("scale", "md", "peered", "--replicas=0", "-n", namespace)
    wait_until(
        "Stopped",
        lambda: condition(md(cluster, namespace, "peered"), "Ready").get("reason") == "Stopped",
        timeout=60,
    )
    assert f"{namespace}/peered" in first_log.read_text()[first_offset:]
