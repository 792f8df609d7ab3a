"""`modelplane-runtime pull` as the init container of a pod on the local cluster, from the S3 server:
what the operator will see (the model in the shared volume; on failure, the exit code and the
kubelet's termination message)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import modelplane_contract as contract
import pytest

from tests.runtime.pull.conftest import sha256
from tests.support import pods
from tests.support.cluster import REPO_ROOT, Cluster, make_print
from tests.support.pods import RESTRICTED
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e
MODEL = b'{"learner": "tiny"}' * 1000
SHOW_MODEL = (
    "import json, os; d = os.environ['MODEL_DIR']; "
    "record = json.load(open(f'{d}/.modelplane-pull.json')); "
    "print(json.dumps({'files': sorted(os.listdir(d)), 'record': record}))"
)


@pytest.fixture(scope="module")
def runtime_image(cluster: Cluster) -> str:
    subprocess.run(["make", "-s", "--no-print-directory", "image", "NAME=runtime"], cwd=REPO_ROOT, check=True)
    return make_print("image-ref", "NAME=runtime")


def pull_pod(image: str, s3: S3Server, uri: str, digest: str | None = None) -> dict[str, Any]:
    """A pod as the operator renders one: pull into an emptyDir, then a container that uses it."""
    show = {
        "name": "show",
        "image": image,
        "command": ["python3", "-c", SHOW_MODEL],
        "env": [{"name": "MODEL_DIR", "value": contract.MODEL_DIR}],
        "securityContext": RESTRICTED,
    }
    env = [{"name": k, "value": v} for k, v in s3.env.items()]
    return pods.pull_pod("pull", image, uri, {"emptyDir": {}}, digest=digest, env=env, then=show)


@pytest.fixture
def s3_model(s3: S3Server, s3_prefix: str) -> str:
    s3.client().put_object(Bucket=s3.bucket, Key=f"{s3_prefix}/model.json", Body=MODEL)
    return f"s3://{s3.bucket}/{s3_prefix}/model.json"


def test_init_container_pulls_into_the_shared_volume(
    cluster: Cluster, namespace: str, runtime_image: str, s3: S3Server, s3_model: str
) -> None:
    cluster.apply(pull_pod(runtime_image, s3, s3_model, sha256(MODEL)), namespace=namespace)
    cluster.wait("pod/pull", "jsonpath={.status.phase}=Succeeded", namespace=namespace, timeout=180)
    shown = json.loads(cluster.kubectl("logs", "-n", namespace, "pull", "-c", "show").stdout.strip())
    assert shown == {
        "files": sorted([contract.PULL_RECORD_FILE, "model.json"]),
        "record": {"uri": s3_model, "digest": sha256(MODEL), "bytes": len(MODEL)},
    }


@pytest.mark.parametrize(
    ("suffix", "digest", "reason"),
    [
        ("absent.json", None, contract.REASON_NOT_FOUND),
        ("model.json", "sha256:" + "0" * 64, contract.REASON_DIGEST_MISMATCH),
    ],
)
def test_failed_pull_shows_its_reason_in_the_pod_status(
    cluster: Cluster,
    namespace: str,
    runtime_image: str,
    s3: S3Server,
    s3_model: str,
    suffix: str,
    digest: str | None,
    reason: str,
) -> None:
    uri = s3_model.rsplit("/", 1)[0] + "/" + suffix
    cluster.apply(pull_pod(runtime_image, s3, uri, digest), namespace=namespace)
    cluster.wait("pod/pull", "jsonpath={.status.phase}=Failed", namespace=namespace, timeout=180)
    [status] = cluster.get("pod", "pull", namespace)["status"]["initContainerStatuses"]
    terminated = status["state"]["terminated"]
    assert terminated["exitCode"] == contract.EXIT_PERMANENT
    failure = contract.parse_termination_message(terminated["message"])
    assert failure.reason == reason
    assert failure.permanent
    assert uri in failure.message
