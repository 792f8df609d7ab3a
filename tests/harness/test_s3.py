"""The S3 server of `make s3`: signed requests work from the host; wrong and anonymous ones are refused."""

from __future__ import annotations

import json
import uuid

import pytest
from botocore import UNSIGNED
from botocore.exceptions import ClientError

from tests.support.cluster import Cluster, make_print, wait_until
from tests.support.pods import run_once_pod
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e


@pytest.fixture
def object_key(s3: S3Server) -> str:
    key = f"harness/{uuid.uuid4().hex}/hello.txt"
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=b"hello from the host")
    return key


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code"))


def test_put_get_list_from_the_host(s3: S3Server, object_key: str) -> None:
    client = s3.client()
    assert client.get_object(Bucket=s3.bucket, Key=object_key)["Body"].read() == b"hello from the host"
    prefix = object_key.rsplit("/", 1)[0] + "/"
    listed = client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix)
    assert [item["Key"] for item in listed["Contents"]] == [object_key]


def test_endpoint_is_on_the_node_ip(s3: S3Server) -> None:
    # Pods reach host services on the node IP, so host and pods share these exact settings.
    assert s3.endpoint.startswith("http://172.28.0.1:")


def test_wrong_secret_is_refused(s3: S3Server, object_key: str) -> None:
    with pytest.raises(ClientError) as refused:
        s3.client(secret_key="not-the-secret").get_object(Bucket=s3.bucket, Key=object_key)
    assert error_code(refused.value) == "SignatureDoesNotMatch"


def test_anonymous_read_is_refused(s3: S3Server, object_key: str) -> None:
    with pytest.raises(ClientError) as refused:
        s3.client(signature_version=UNSIGNED).get_object(Bucket=s3.bucket, Key=object_key)
    assert error_code(refused.value) == "AccessDenied"
    with pytest.raises(ClientError) as refused_listing:
        s3.client(signature_version=UNSIGNED).list_objects_v2(Bucket=s3.bucket)
    assert error_code(refused_listing.value) == "AccessDenied"


# The same checks from inside a pod: real boto3 (mounted from the host, pinned like the runtime's)
# in the cluster's small Python image, reaching the host's S3 server on the node IP.
POD_SCRIPT = """
import json, os, boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

def client(secret=None, **config):
    return boto3.session.Session().client(
        "s3", aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret or os.environ["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config))

def refused(c, key):
    try:
        c.get_object(Bucket=bucket, Key=key)
    except ClientError as e:
        return e.response["Error"]["Code"]
    return "allowed"

bucket, key = os.environ["MODELPLANE_S3_BUCKET"], os.environ["KEY"]
c = client()
c.put_object(Bucket=bucket, Key=key, Body=b"hello from a pod")
print(json.dumps({
    "read": c.get_object(Bucket=bucket, Key=key)["Body"].read().decode(),
    "listed": [o["Key"] for o in c.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"]],
    "wrong_secret": refused(client(secret="not-the-secret"), key),
    "anonymous": refused(client(signature_version=UNSIGNED), key),
}))
"""


def test_put_get_list_and_refusals_from_a_pod(
    s3: S3Server, cluster: Cluster, namespace: str, echo_image: str
) -> None:
    """In the cluster tests' small Python image (python3 only; boto3 comes from the mounted directory)."""
    client_dir = make_print("s3-pod-client")
    key = f"harness/{uuid.uuid4().hex}/from-pod.txt"
    env = {**s3.env, "MODELPLANE_S3_BUCKET": s3.bucket, "KEY": key, "PYTHONPATH": "/opt/s3-client"}
    client = {
        "name": "client",
        "image": echo_image,
        "command": ["python3", "-c", POD_SCRIPT],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "volumeMounts": [{"name": "client", "mountPath": "/opt/s3-client", "readOnly": True}],
    }
    volume = {"name": "client", "hostPath": {"path": client_dir, "type": "Directory"}}
    cluster.apply(run_once_pod("s3-client", [client], volumes=[volume]), namespace=namespace)
    phase = wait_until(
        "the s3-client pod to finish",
        lambda: (
            cluster.get("pod", "s3-client", namespace)["status"].get("phase") in ("Succeeded", "Failed")
            and cluster.get("pod", "s3-client", namespace)["status"]["phase"]
        ),
        timeout=120,
    )
    logs = cluster.kubectl("logs", "-n", namespace, "s3-client").stdout
    assert phase == "Succeeded", logs
    report = json.loads(logs.strip().splitlines()[-1])
    assert report == {
        "read": "hello from a pod",
        "listed": [key],
        "wrong_secret": "SignatureDoesNotMatch",
        "anonymous": "AccessDenied",
    }
    # Written from the pod, read back from the host: one server, one bucket.
    assert s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read() == b"hello from a pod"
