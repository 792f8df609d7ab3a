"""`pull gs://...` through google-cloud-storage against fake-gcs-server (built by `make fake-gcs-server`)."""

from __future__ import annotations

import os
import uuid
from typing import Any

import modelplane_contract as contract
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from tests.runtime.pull.conftest import PullRunner, assert_failed, sha256, tree_digest

pytestmark = pytest.mark.e2e
PERMANENT = contract.EXIT_PERMANENT
BUCKET = "models"
BIG = os.urandom(3 << 20)


@pytest.fixture(scope="module")
def gcs_bucket(fake_gcs_server: str) -> Any:
    os.environ["STORAGE_EMULATOR_HOST"] = fake_gcs_server  # the seeding client reads it too
    client = storage.Client(project="modelplane", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    bucket = client.bucket(BUCKET)
    if not bucket.exists():
        bucket = client.create_bucket(BUCKET)
    yield bucket
    client.close()
    del os.environ["STORAGE_EMULATOR_HOST"]


@pytest.fixture
def gcs_prefix(gcs_bucket: Any, fake_gcs_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs_server)
    return f"pull-tests/{uuid.uuid4().hex[:10]}"


def upload(bucket: Any, prefix: str, files: dict[str, bytes]) -> None:
    for relpath, data in files.items():
        bucket.blob(f"{prefix}/{relpath}").upload_from_string(data)


def test_file(gcs_bucket: Any, gcs_prefix: str, run_pull: PullRunner) -> None:
    upload(gcs_bucket, gcs_prefix, {"model.json": BIG})
    uri = f"gs://{BUCKET}/{gcs_prefix}/model.json"
    result = run_pull(uri, "--digest", sha256(BIG))
    assert result.code == contract.EXIT_OK, result.stderr
    assert (result.dest / "model.json").read_bytes() == BIG
    assert result.record() == {"uri": uri, "digest": sha256(BIG), "bytes": len(BIG)}


def test_prefix(gcs_bucket: Any, gcs_prefix: str, run_pull: PullRunner) -> None:
    files = {"model.txt": b"tree 0", "assets/a.bin": b"\x00\x01", "assets/deep/b.bin": b"b" * 1000}
    upload(gcs_bucket, gcs_prefix, files)
    expected = tree_digest(files)
    result = run_pull(f"gs://{BUCKET}/{gcs_prefix}", "--digest", expected)
    assert result.code == contract.EXIT_OK, result.stderr
    for relpath, data in files.items():
        assert (result.dest / relpath).read_bytes() == data


def test_digest_mismatch(gcs_bucket: Any, gcs_prefix: str, run_pull: PullRunner) -> None:
    upload(gcs_bucket, gcs_prefix, {"m.bin": b"abc"})
    wrong = sha256(b"abd")
    result = run_pull(f"gs://{BUCKET}/{gcs_prefix}/m.bin", "--digest", wrong)
    assert_failed(result, PERMANENT, contract.REASON_DIGEST_MISMATCH, wrong)


def test_missing_object(gcs_bucket: Any, gcs_prefix: str, run_pull: PullRunner) -> None:
    uri = f"gs://{BUCKET}/{gcs_prefix}/absent.bin"
    assert_failed(run_pull(uri), PERMANENT, contract.REASON_NOT_FOUND, f"no object {uri}")


def test_missing_bucket(gcs_bucket: Any, gcs_prefix: str, run_pull: PullRunner) -> None:
    result = run_pull("gs://no-such-bucket/model.bin")
    assert_failed(result, PERMANENT, contract.REASON_NOT_FOUND, "gs://no-such-bucket/model.bin")
