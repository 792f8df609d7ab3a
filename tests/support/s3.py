"""The S3 server `make s3` starts (SeaweedFS): its settings as `make -s s3-env` prints them, and the `s3`
fixture (registered once, by tests/conftest.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import urllib.request
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import REPO_ROOT, make_print


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    bucket: str
    metrics_url: str = ""  # SeaweedFS's Prometheus metrics (MODELPLANE_S3_METRICS_URL)

    def traffic(self) -> Traffic:
        """The server's counters for the bucket so far: GETs answered with content, bytes sent."""
        assert self.metrics_url, "no MODELPLANE_S3_METRICS_URL: `make s3` starts weed with its metrics"
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            text = response.read().decode()
        gets = sent = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.labels.get("bucket") != self.bucket:
                    continue
                if sample.name == "SeaweedFS_s3_request_total" and sample.labels.get("type") == "GET":
                    gets += sample.value if sample.labels.get("code") in ("200", "206") else 0
                elif sample.name == "SeaweedFS_s3_bucket_traffic_sent_bytes_total":
                    sent += sample.value
        return Traffic(gets=int(gets), sent_bytes=int(sent))

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables (what a pod or `modelplane-runtime pull` is given)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def client(self, secret_key: str | None = None, **config: Any) -> Any:
        """A boto3 client with path-style addressing (SeaweedFS has no virtual-host buckets here)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key if secret_key is None else secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),
        )

    def upload(self, key: str, data: bytes) -> str:
        """Put an object into the bucket; its sha256 digest, as a ModelDeployment pins it."""
        self.client().put_object(Bucket=self.bucket, Key=key, Body=data)
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def upload_random(self, key: str, size: int) -> str:
        """Put SIZE random bytes at KEY, streamed (a large object never whole in memory); its hex sha256."""
        source = RandomSource(size)
        self.client().upload_fileobj(
            source, self.bucket, key, Config=TransferConfig(multipart_chunksize=64 << 20)
        )
        return source.sha.hexdigest()


@dataclass(frozen=True)
class Traffic:
    """Downloads from the bucket as the S3 server counts them (SeaweedFS_s3_request_total of type GET
    with a 200/206 answer, SeaweedFS_s3_bucket_traffic_sent_bytes_total); subtract two readings."""

    gets: int
    sent_bytes: int

    def __sub__(self, earlier: Traffic) -> Traffic:
        return Traffic(self.gets - earlier.gets, self.sent_bytes - earlier.sent_bytes)


class RandomSource:
    """SIZE random bytes for upload_fileobj (which reads a non-seekable stream in order), hashed as read."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.sha = hashlib.sha256()

    def read(self, count: int = -1) -> bytes:
        count = self.left if count < 0 else min(count, self.left)
        data = os.urandom(count)
        self.sha.update(data)
        self.left -= count
        return data


def start_s3() -> S3Server:
    """Runs `make s3` (idempotent) and returns the server's settings."""
    subprocess.run(
        ["make", "-s", "--no-print-directory", "s3"], cwd=REPO_ROOT, check=True, capture_output=True
    )
    return server_from_env_lines(make_print("s3-env"))


def server_from_env_lines(text: str) -> S3Server:
    """The server that AWS_* and MODELPLANE_S3_BUCKET lines (as `make s3-env` prints them) name."""
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return S3Server(
        endpoint=values["AWS_ENDPOINT_URL"],
        access_key=values["AWS_ACCESS_KEY_ID"],
        secret_key=values["AWS_SECRET_ACCESS_KEY"],
        region=values["AWS_REGION"],
        bucket=values["MODELPLANE_S3_BUCKET"],
        metrics_url=values.get("MODELPLANE_S3_METRICS_URL", ""),
    )


@pytest.fixture(scope="session")
def s3() -> S3Server:
    """The S3 server `make s3` runs (idempotent), with the bucket the examples name."""
    return start_s3()
