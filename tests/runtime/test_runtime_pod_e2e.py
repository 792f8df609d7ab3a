"""The runtime image as a pod: an init container pulls the model from the S3 server, the server
container serves it, both under the restricted Pod Security profile with a read-only root."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import modelplane_contract as contract
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from tests.runtime.models import iris, save_iris_logistic_regression
from tests.support.cluster import Cluster, make_print, wait_until
from tests.support.pods import RESTRICTED
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e


def runtime_pod(image: str, uri: str, digest: str, secret: str) -> dict[str, Any]:
    credentials = [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name}}}
        for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
    ]
    mounts = [
        {"name": contract.MODEL_VOLUME_NAME, "mountPath": contract.MODEL_DIR},
        {"name": contract.TMP_VOLUME_NAME, "mountPath": contract.TMP_DIR},
    ]
    common = {"MODELPLANE_MODEL_DIGEST": digest, "MODELPLANE_MODEL_DIR": contract.MODEL_DIR}
    env = [{"name": name, "value": value} for name, value in common.items()]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "runtime", "labels": {"app": "runtime"}},
        "spec": {
            "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532},
            "initContainers": [
                {
                    "name": contract.PULL_CONTAINER_NAME,
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "args": [contract.PULL_SUBCOMMAND, "--uri", uri],
                    "env": [*env, *credentials],
                    "volumeMounts": mounts,
                    "securityContext": RESTRICTED,
                }
            ],
            "containers": [
                {
                    "name": contract.SERVER_CONTAINER_NAME,
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "args": [
                        contract.SERVE_SUBCOMMAND,
                        "--format",
                        "sklearn",
                        "--name",
                        "iris",
                        "--workers",
                        "2",
                    ],
                    "env": env,
                    "ports": [
                        {"name": contract.HTTP_PORT_NAME, "containerPort": contract.HTTP_PORT},
                        {"name": contract.GRPC_PORT_NAME, "containerPort": contract.GRPC_PORT},
                    ],
                    "livenessProbe": {"httpGet": {"path": contract.LIVE_PATH, "port": contract.HTTP_PORT}},
                    "readinessProbe": {
                        "httpGet": {"path": contract.READY_PATH, "port": contract.HTTP_PORT},
                        "periodSeconds": 2,
                    },
                    "volumeMounts": mounts,
                    "securityContext": RESTRICTED,
                    # A small request: the one node is shared by every e2e test.
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "256Mi"},
                        "limits": {"memory": "1Gi"},
                    },
                }
            ],
            "volumes": [
                {"name": contract.MODEL_VOLUME_NAME, "emptyDir": {}},
                {"name": contract.TMP_VOLUME_NAME, "emptyDir": {"medium": "Memory"}},
            ],
        },
    }


def post_json(url: str, payload: Any) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_runtime_pod_pulls_from_s3_and_serves_sklearn_predictions(
    cluster: Cluster, namespace: str, s3: S3Server, tmp_path: Path
) -> None:
    estimator: LogisticRegression = save_iris_logistic_regression(tmp_path)
    artifact = (tmp_path / "model.skops").read_bytes()
    key = f"runtime-e2e/{uuid.uuid4().hex[:10]}/model.skops"
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=artifact)
    digest = "sha256:" + hashlib.sha256(artifact).hexdigest()

    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "s3",
        "-n",
        namespace,
        *(f"--from-literal={k}={v}" for k, v in s3.env.items()),
    )
    image = make_print("image-ref", "NAME=runtime")
    cluster.apply(runtime_pod(image, f"s3://{s3.bucket}/{key}", digest, "s3"), namespace=namespace)
    cluster.wait("pod/runtime", "condition=Ready", namespace=namespace, timeout=300)

    pod = cluster.get("pod", "runtime", namespace=namespace)
    pod_ip = wait_until("the pod's IP", lambda: pod["status"].get("podIP"))
    base = f"http://{pod_ip}:{contract.HTTP_PORT}"
    with urllib.request.urlopen(f"{base}/v2/models/iris", timeout=30) as response:
        metadata = json.loads(response.read())
    assert metadata["parameters"]["digest"] == digest

    rows = iris()[0][::7]
    body = post_json(
        f"{base}/v2/models/iris/infer",
        {
            "inputs": [
                {"name": "x", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}
            ]
        },
    )
    assert body["outputs"][0]["data"] == estimator.predict(rows).tolist()
    v1 = post_json(f"{base}/v1/models/iris:predict", {"instances": rows.tolist()})
    assert np.array_equal(v1["predictions"], estimator.predict(rows))

    logs = cluster.kubectl("logs", "-n", namespace, "runtime", "-c", contract.PULL_CONTAINER_NAME).stdout
    assert digest in logs

    # The server is PID 1 in its container: SIGTERM must still reach it and end it well within the
    # pod's 30 s grace period (an init process ignores signals it has no handler for).
    started = time.monotonic()
    cluster.kubectl("delete", "pod", "runtime", "-n", namespace, "--wait=true", "--timeout=90s", timeout=120)
    assert time.monotonic() - started < 20
