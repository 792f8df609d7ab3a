"""The S3 server of `make s3`: signed requests work from the host; wrong and anonymous ones are refused."""

from __future__ import annotations

import uuid

import pytest
from botocore import UNSIGNED
from botocore.exceptions import ClientError

from tests.support.s3 import S3Server, start_s3

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def s3() -> S3Server:
    return start_s3()


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
