"""Faults the model server and the operator survive, on the real cluster: a model server OOM-killed by its
memory limit. (The S3 server stopping under a pull: test_pull_faults_e2e.py.)"""

from __future__ import annotations

import io
from pathlib import Path

import joblib
import modelplane_contract as contract
import numpy as np
import pytest

from tests.support.cluster import Cluster
from tests.support.examples import credentials_secret
from tests.support.modeldeployments import children, condition, s3_model_deployment, wait_reason
from tests.support.models import SklearnModel
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e


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
