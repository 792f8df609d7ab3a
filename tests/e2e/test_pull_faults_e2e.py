"""Faults under a pull, on the real cluster: the S3 server stops while a pod's init container pulls."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import modelplane_contract as contract
import pytest
from modelplane_runtime.storage.digest import manifest_digest

from tests.support.cluster import Cluster, make, wait_until
from tests.support.examples import credentials_secret
from tests.support.modeldeployments import (
    children,
    condition,
    md,
    predict_v1,
    s3_model_deployment,
    wait_ready,
    wait_service,
)
from tests.support.models import SklearnModel
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e
# Beside the model, so that the pull lasts long enough to be cut (seconds, even on an idle machine).
PADDING_BYTES = 2 << 30


def pull_status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    for pod in children(cluster, namespace, name, "pod"):
        for init in (pod.get("status") or {}).get("initContainerStatuses") or []:
            if init.get("name") == contract.PULL_CONTAINER_NAME:
                found: dict[str, Any] = init
                return found
    return None


def delete_prefix(s3: S3Server, prefix: str) -> None:
    client = s3.client()
    listed = client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix + "/").get("Contents", [])
    for item in listed:
        client.delete_object(Bucket=s3.bucket, Key=item["Key"])


@pytest.mark.exclusive
def test_a_pull_cut_by_the_s3_server_stopping_retries_with_its_reason_and_completes_when_it_is_back(
    cluster: Cluster,
    namespace: str,
    operator: Path,
    s3: S3Server,
    iris_models: dict[str, SklearnModel],
    request: pytest.FixtureRequest,
) -> None:
    v1 = iris_models["v1"]
    prefix = f"faults/{namespace}"
    client = s3.client()
    model_bytes = client.get_object(Bucket=s3.bucket, Key=v1.key)["Body"].read()
    client.put_object(Bucket=s3.bucket, Key=f"{prefix}/model.joblib", Body=model_bytes)
    request.addfinalizer(lambda: delete_prefix(s3, prefix))
    padding_sha = s3.upload_random(f"{prefix}/padding.bin", PADDING_BYTES)
    digest = manifest_digest(
        {"model.joblib": hashlib.sha256(model_bytes).hexdigest(), "padding.bin": padding_sha}
    )
    # The directory: model.joblib and the padding, pinned by their manifest digest.
    model = SklearnModel(s3.bucket, f"{prefix}/", digest, v1.sample, v1.estimator)
    name = "cut"
    cluster.apply([credentials_secret(s3), s3_model_deployment(name, model)], namespace)

    def pulling() -> bool:
        init = pull_status(cluster, namespace, name)
        return init is not None and "running" in (init.get("state") or {})

    wait_until("the pull to be running", pulling, timeout=180, interval=0.2)
    # Killed, not stopped: after SIGTERM the server can finish the transfers in flight, and on a quiet
    # machine the whole pull (2 GiB, about 6 s) then completes before it goes.
    make("s3-down", "S3_STOP_SIGNAL=KILL")
    try:
        # The pull's retries run out with the server gone; its line is kept in lastState, and the
        # status says the pull is retrying, with the pull's reason.
        def retrying() -> dict[str, Any] | None:
            ready = condition(md(cluster, namespace, name), "Ready")
            return ready if "pull failed, retrying" in ready.get("message", "") else None

        ready = wait_until("Ready to say the pull is retrying", retrying, timeout=240)
        assert ready["status"] == "False"
        assert ready["reason"] == "ModelPulling"
        assert f"{contract.REASON_TRANSIENT}: " in ready["message"]
        init = pull_status(cluster, namespace, name)
        assert init is not None
        terminated = (init.get("lastState") or {}).get("terminated") or (init.get("state") or {}).get(
            "terminated"
        )
        assert terminated is not None, init
        assert terminated["exitCode"] == contract.EXIT_TRANSIENT
        line = terminated["message"].strip()
        assert line.startswith(f"{contract.REASON_TRANSIENT}: ")
        assert line in ready["message"]
        assert condition(md(cluster, namespace, name), "Degraded").get("status") != "True"  # not given up
    finally:
        make("s3")  # the server back for every later test, whatever happened here
    wait_ready(cluster, namespace, name, timeout=300)
    init = pull_status(cluster, namespace, name)
    assert init is not None
    assert init["restartCount"] >= 1
    assert init["state"]["terminated"]["exitCode"] == 0
    wait_service(cluster, namespace, name)
    assert predict_v1(cluster, namespace, name, name, v1.sample) == v1.expected()
