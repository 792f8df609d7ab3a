"""``s3://BUCKET/KEY`` and ``s3://BUCKET/PREFIX/``: boto3 with path-style addressing.

Endpoint, region and credentials come from the standard AWS variables (``AWS_ENDPOINT_URL`` or
``AWS_ENDPOINT_URL_S3``, ``AWS_REGION`` or ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID`` ...), so
SeaweedFS, MinIO and other S3-compatible stores work as well as AWS. A key that names an object is
one file; otherwise it is a prefix and every object under ``KEY/`` is pulled. botocore's own retries
are off: the generic retry loop owns them, and the read timeout is the stall limit.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from typing import Any

import boto3
import modelplane_contract as contract
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from modelplane_runtime.storage.base import (
    Listing,
    PullError,
    RemoteFile,
    Settings,
    byte_range,
    stalled,
    transient,
)

NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NotFound"})
DENIED_CODES = frozenset(
    {"403", "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken"}
)
TRANSIENT_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError", "Throttling"}
)


def client(settings: Settings) -> Any:
    """An S3 client from the pod's environment (the pull's, and the optimize step's cache)."""
    # A session of its own: boto3's default session caches the credentials it first found.
    return boto3.session.Session().client(
        "s3",
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None,
        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=settings.connect_seconds,
            read_timeout=settings.stall_seconds,
            retries={"max_attempts": 1, "mode": "standard"},
        ),
    )


class S3Backend:
    def __init__(self, bucket: str, key: str, settings: Settings) -> None:
        self.bucket = bucket
        self.key = key
        self.settings = settings
        self.uri = f"s3://{bucket}/{key}"
        self.client: Any = client(settings)

    def list(self) -> Listing:
        if self.key and not self.key.endswith("/"):
            single = self._head(self.key)
            if single is not None:
                return Listing([single], single=True)
        prefix = self.key.rstrip("/") + "/" if self.key else ""
        files = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                if not key.endswith("/"):  # "directory" markers some tools write
                    files.append(RemoteFile(key[len(prefix) :], item["Size"], key))
        if not files:
            raise PullError(
                contract.REASON_NOT_FOUND,
                f"no object {self.uri} and no objects under s3://{self.bucket}/{prefix}",
            )
        return Listing(files, single=False)

    def _head(self, key: str) -> RemoteFile | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error_code(error) in NOT_FOUND_CODES:
                return None
            raise
        return RemoteFile(posixpath.basename(key), int(head["ContentLength"]), key)

    def read(self, remote: RemoteFile, offset: int, end: int | None = None) -> Iterator[bytes]:
        ranged = {"Range": byte_range(offset, end)} if offset or end is not None else {}
        body = self.client.get_object(Bucket=self.bucket, Key=remote.locator, **ranged)["Body"]
        try:
            yield from body.iter_chunks(self.settings.chunk_bytes)
        finally:
            body.close()

    def close(self) -> None:
        self.client.close()

    def translate(self, error: Exception) -> PullError:
        if isinstance(error, ClientError):
            code = error_code(error)
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            detail = f"{self.uri}: {code}"
            if code in NOT_FOUND_CODES:
                return PullError(contract.REASON_NOT_FOUND, f"{detail}: no such bucket or object")
            if code in DENIED_CODES:
                return PullError(
                    contract.REASON_ACCESS_DENIED,
                    f"{detail}: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's policy",
                )
            if code in TRANSIENT_CODES or status >= 500:
                return transient(detail)
            return PullError(contract.REASON_NOT_FOUND, f"{detail} (HTTP {status})")
        if isinstance(error, NoCredentialsError):
            return PullError(
                contract.REASON_ACCESS_DENIED,
                f"{self.uri}: no credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
            )
        if isinstance(error, ReadTimeoutError):
            return stalled(self.settings.stall_seconds)
        if isinstance(
            error,
            EndpointConnectionError | ConnectionClosedError | IncompleteReadError | ResponseStreamingError,
        ):
            return transient(f"{self.uri}: {error}")
        if isinstance(error, BotoCoreError):
            return transient(f"{self.uri}: {type(error).__name__}: {error}")
        return transient(f"{self.uri}: {type(error).__name__}: {error}")


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
