"""`pull s3://...` against the real S3 server of `make s3` (SeaweedFS), with faults injected by a TCP
proxy in front of it for the connection-cut and stall cases."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from urllib.parse import urlsplit

import modelplane_contract as contract
import pytest
from modelplane_runtime.storage import transfer
from modelplane_runtime.storage.base import RemoteFile, Settings
from modelplane_runtime.storage.s3 import S3Backend

from tests.runtime.pull.conftest import FaultProxy, PullRunner, assert_failed, sha256, tree_digest
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e
PERMANENT, TRANSIENT = contract.EXIT_PERMANENT, contract.EXIT_TRANSIENT
BIG = os.urandom(6 << 20)  # several chunks, so faults land mid-stream


@pytest.fixture(params=["one stream", "ranges"])
def streams(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each fault test twice: BIG in one stream, and as 4 ranges of 1.5 MiB at once (the path of a
    file of 128 MiB and more, MIN_RANGE_BYTES lowered to keep the test small)."""
    if request.param == "ranges":
        monkeypatch.setattr(transfer, "MIN_RANGE_BYTES", 1 << 20)
    return str(request.param)


def upload(s3: S3Server, prefix: str, files: dict[str, bytes]) -> None:
    client = s3.client()
    for relpath, data in files.items():
        client.put_object(Bucket=s3.bucket, Key=f"{prefix}/{relpath}", Body=data)


def test_file(s3: S3Server, s3_prefix: str, run_pull: PullRunner) -> None:
    upload(s3, s3_prefix, {"model.ubj": BIG})
    uri = f"s3://{s3.bucket}/{s3_prefix}/model.ubj"
    result = run_pull(uri, "--digest", sha256(BIG))
    assert result.code == contract.EXIT_OK, result.stderr
    assert (result.dest / "model.ubj").read_bytes() == BIG
    assert result.record() == {"uri": uri, "digest": sha256(BIG), "bytes": len(BIG)}


@pytest.mark.usefixtures("streams")
def test_file_in_one_stream_or_ranges(s3: S3Server, s3_prefix: str, run_pull: PullRunner) -> None:
    upload(s3, s3_prefix, {"model.safetensors": BIG})
    result = run_pull(f"s3://{s3.bucket}/{s3_prefix}/model.safetensors", "--digest", sha256(BIG))
    assert result.code == contract.EXIT_OK, result.stderr
    assert (result.dest / "model.safetensors").read_bytes() == BIG


def test_read_of_a_byte_range(s3: S3Server, s3_prefix: str) -> None:
    """The store serves exactly [offset, end): what a ranged download stitches together."""
    upload(s3, s3_prefix, {"m.bin": BIG})
    backend = S3Backend(s3.bucket, f"{s3_prefix}/m.bin", Settings())
    try:
        remote = RemoteFile("m.bin", len(BIG), f"{s3_prefix}/m.bin")
        for start, end in [(0, 4096), (12345, 3 << 20), (len(BIG) - 10, len(BIG)), (5, None)]:
            assert b"".join(backend.read(remote, start, end)) == BIG[start:end]
    finally:
        backend.close()


def test_key_with_url_characters(s3: S3Server, s3_prefix: str, run_pull: PullRunner) -> None:
    upload(s3, s3_prefix, {"v1?x=1#frag/model file.bin": b"odd key"})
    result = run_pull(f"s3://{s3.bucket}/{s3_prefix}/v1?x=1#frag/model file.bin")
    assert result.code == contract.EXIT_OK, result.stderr
    assert (result.dest / "model file.bin").read_bytes() == b"odd key"


@pytest.mark.parametrize("trailing_slash", ["", "/"])
def test_prefix(s3: S3Server, s3_prefix: str, run_pull: PullRunner, trailing_slash: str) -> None:
    files = {"config.json": b"{}", "weights/part-0.bin": b"\x01" * 4096, "weights/part-1.bin": b"\x02" * 10}
    upload(s3, s3_prefix, files)
    upload(s3, s3_prefix + "-sibling", {"not-mine.txt": b"x"})  # shares the key prefix, not the "dir"
    expected = tree_digest(files)
    result = run_pull(f"s3://{s3.bucket}/{s3_prefix}{trailing_slash}", "--digest", expected)
    assert result.code == contract.EXIT_OK, result.stderr
    pulled = {p.relative_to(result.dest).as_posix() for p in result.dest.rglob("*") if p.is_file()}
    assert pulled == {*files, contract.PULL_RECORD_FILE}
    assert (result.dest / "weights/part-0.bin").read_bytes() == files["weights/part-0.bin"]


def test_archive(s3: S3Server, s3_prefix: str, run_pull: PullRunner) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in {"model.onnx": b"onnx-bytes", "meta/labels.txt": b"cat\ndog\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = buffer.getvalue()
    upload(s3, s3_prefix, {"model.tar.gz": archive})
    result = run_pull(f"s3://{s3.bucket}/{s3_prefix}/model.tar.gz", "--digest", sha256(archive))
    assert result.code == contract.EXIT_OK, result.stderr
    assert (result.dest / "model.onnx").read_bytes() == b"onnx-bytes"
    assert (result.dest / "meta/labels.txt").read_bytes() == b"cat\ndog\n"
    assert result.record()["digest"] == sha256(archive)


def test_digest_mismatch(s3: S3Server, s3_prefix: str, run_pull: PullRunner) -> None:
    upload(s3, s3_prefix, {"m.bin": b"the real bytes"})
    wrong = sha256(b"other bytes")
    result = run_pull(f"s3://{s3.bucket}/{s3_prefix}/m.bin", "--digest", wrong)
    assert_failed(result, PERMANENT, contract.REASON_DIGEST_MISMATCH, wrong, sha256(b"the real bytes"))
    assert not result.dest.exists()


def test_missing_object(s3: S3Server, s3_prefix: str, run_pull: PullRunner) -> None:
    uri = f"s3://{s3.bucket}/{s3_prefix}/absent.bin"
    result = run_pull(uri)
    assert_failed(result, PERMANENT, contract.REASON_NOT_FOUND, f"no object {uri}")


def test_missing_bucket(s3: S3Server, s3_prefix: str, run_pull: PullRunner) -> None:
    result = run_pull("s3://no-such-bucket-modelplane/model.bin")
    assert_failed(result, PERMANENT, contract.REASON_NOT_FOUND, "s3://no-such-bucket-modelplane/model.bin")


def test_bad_credentials(s3: S3Server, s3_prefix: str, run_pull: PullRunner) -> None:
    upload(s3, s3_prefix, {"m.bin": b"secret model"})
    result = run_pull(
        f"s3://{s3.bucket}/{s3_prefix}/m.bin", env={"AWS_SECRET_ACCESS_KEY": "wrong-secret-key"}
    )
    assert_failed(result, PERMANENT, contract.REASON_ACCESS_DENIED, "AWS_SECRET_ACCESS_KEY")


def test_unknown_access_key(s3: S3Server, s3_prefix: str, run_pull: PullRunner) -> None:
    upload(s3, s3_prefix, {"dir/m.bin": b"secret model"})
    result = run_pull(f"s3://{s3.bucket}/{s3_prefix}/dir/", env={"AWS_ACCESS_KEY_ID": "NOSUCHKEY"})
    assert_failed(result, PERMANENT, contract.REASON_ACCESS_DENIED, "AWS_ACCESS_KEY_ID")


def upstream(s3: S3Server) -> tuple[str, int]:
    parts = urlsplit(s3.endpoint)
    return parts.hostname or "", parts.port or 80


MakeProxy = Callable[[tuple[str, int], str, int, int], FaultProxy]


@pytest.mark.usefixtures("streams")
def test_connection_cut_mid_download_is_retried(
    s3: S3Server, s3_prefix: str, run_pull: PullRunner, fault_proxy: MakeProxy
) -> None:
    upload(s3, s3_prefix, {"m.bin": BIG})
    proxy = fault_proxy(upstream(s3), "cut", 1 << 20, 1)
    result = run_pull(
        f"s3://{s3.bucket}/{s3_prefix}/m.bin",
        "--digest",
        sha256(BIG),
        env={"AWS_ENDPOINT_URL": proxy.url},
    )
    assert result.code == contract.EXIT_OK, result.stderr
    assert "retry 1/2" in result.stderr
    assert proxy.connections >= 2
    assert (result.dest / "m.bin").read_bytes() == BIG


def test_connection_cut_every_time_fails_transient(
    s3: S3Server, s3_prefix: str, run_pull: PullRunner, fault_proxy: MakeProxy, streams: str
) -> None:
    upload(s3, s3_prefix, {"m.bin": BIG})
    # Each attempt resumes where the last was cut: cut soon enough that 3 attempts never finish.
    after = 256 << 10 if streams == "ranges" else 1 << 20
    proxy = fault_proxy(upstream(s3), "cut", after, 1000)
    result = run_pull(f"s3://{s3.bucket}/{s3_prefix}/m.bin", env={"AWS_ENDPOINT_URL": proxy.url})
    assert_failed(result, TRANSIENT, contract.REASON_TRANSIENT, "gave up after 3 attempts")


@pytest.mark.usefixtures("streams")
def test_stalled_download_is_aborted_and_retried(
    s3: S3Server, s3_prefix: str, run_pull: PullRunner, fault_proxy: MakeProxy
) -> None:
    upload(s3, s3_prefix, {"m.bin": BIG})
    proxy = fault_proxy(upstream(s3), "stall", 1 << 20, 1)
    result = run_pull(f"s3://{s3.bucket}/{s3_prefix}/m.bin", env={"AWS_ENDPOINT_URL": proxy.url})
    assert result.code == contract.EXIT_OK, result.stderr
    assert "download stalled: no bytes for 1s; retry 1/2" in result.stderr
    assert (result.dest / "m.bin").read_bytes() == BIG


@pytest.mark.usefixtures("streams")
def test_download_stalling_every_time_fails_transient(
    s3: S3Server, s3_prefix: str, run_pull: PullRunner, fault_proxy: MakeProxy
) -> None:
    upload(s3, s3_prefix, {"m.bin": BIG})
    proxy = fault_proxy(upstream(s3), "stall", 1 << 20, 1000)
    result = run_pull(
        f"s3://{s3.bucket}/{s3_prefix}/m.bin",
        env={"AWS_ENDPOINT_URL": proxy.url, contract.ENV_PULL_RETRIES: "1"},
    )
    assert_failed(result, TRANSIENT, contract.REASON_TRANSIENT, "download stalled: no bytes for 1s")
