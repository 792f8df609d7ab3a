"""`pull` from a real local HTTP server: statuses, a connection cut mid-download, a stalled download."""

from __future__ import annotations

import os

import modelplane_contract as contract
import pytest
from modelplane_runtime.storage.base import Settings
from modelplane_runtime.storage.http import http_client, stream_url

from tests.runtime.pull.conftest import FaultyHTTPServer, PullRunner, Route, assert_failed, sha256

PERMANENT, TRANSIENT = contract.EXIT_PERMANENT, contract.EXIT_TRANSIENT
BODY = os.urandom(3 << 20)  # bigger than one chunk, so a cut lands mid-stream


def test_file_over_http(http_server: FaultyHTTPServer, run_pull: PullRunner) -> None:
    http_server.routes["/models/model.onnx"] = Route(BODY)
    result = run_pull(f"{http_server.url}/models/model.onnx", "--digest", sha256(BODY))
    assert result.code == contract.EXIT_OK, result.stderr
    assert (result.dest / "model.onnx").read_bytes() == BODY
    assert result.record()["bytes"] == len(BODY)


def test_missing_file_is_not_found(http_server: FaultyHTTPServer, run_pull: PullRunner) -> None:
    result = run_pull(f"{http_server.url}/models/absent.onnx")
    assert_failed(result, PERMANENT, contract.REASON_NOT_FOUND, "HTTP 404", "absent.onnx")


def test_unauthorized_is_access_denied(http_server: FaultyHTTPServer, run_pull: PullRunner) -> None:
    http_server.routes["/private/m.bin"] = Route(BODY, require_header=("Authorization", "Bearer s3cret"))
    result = run_pull(f"{http_server.url}/private/m.bin")
    assert_failed(result, PERMANENT, contract.REASON_ACCESS_DENIED, "HTTP 401")


def test_server_error_is_transient_after_retries(http_server: FaultyHTTPServer, run_pull: PullRunner) -> None:
    http_server.routes["/m.bin"] = route = Route(b"oops", status=503)
    result = run_pull(f"{http_server.url}/m.bin")
    assert_failed(result, TRANSIENT, contract.REASON_TRANSIENT, "HTTP 503", "gave up after 3 attempts")
    assert route.requests == 3  # the first try and MODELPLANE_PULL_RETRIES=2 retries


def test_connection_cut_mid_download_is_retried(http_server: FaultyHTTPServer, run_pull: PullRunner) -> None:
    http_server.routes["/m.bin"] = route = Route(BODY, fault="cut", faulty_requests=1)
    result = run_pull(f"{http_server.url}/m.bin", "--digest", sha256(BODY))
    assert result.code == contract.EXIT_OK, result.stderr
    assert route.requests == 2
    assert "retry 1/2" in result.stderr
    assert (result.dest / "m.bin").read_bytes() == BODY


def test_retry_resumes_with_a_range_request(http_server: FaultyHTTPServer, run_pull: PullRunner) -> None:
    http_server.routes["/m.bin"] = route = Route(BODY, fault="cut", faulty_requests=1, ranges=True)
    result = run_pull(f"{http_server.url}/m.bin", "--digest", sha256(BODY))
    assert result.code == contract.EXIT_OK, result.stderr
    assert route.requests == 2
    [resumed_at] = route.range_headers
    assert 0 < int(resumed_at.removeprefix("bytes=").rstrip("-")) <= len(BODY) // 2
    assert (result.dest / "m.bin").read_bytes() == BODY


def test_connection_cut_every_time_fails_transient(
    http_server: FaultyHTTPServer, run_pull: PullRunner
) -> None:
    http_server.routes["/m.bin"] = Route(BODY, fault="cut")
    result = run_pull(f"{http_server.url}/m.bin")
    assert_failed(
        result, TRANSIENT, contract.REASON_TRANSIENT, "RemoteProtocolError", "gave up after 3 attempts"
    )
    assert not result.dest.exists()
    assert not [p for p in result.dest.parent.iterdir() if "staging" in p.name]


def test_stalled_download_is_aborted_and_retried(http_server: FaultyHTTPServer, run_pull: PullRunner) -> None:
    http_server.routes["/m.bin"] = route = Route(BODY, fault="stall", faulty_requests=1)
    result = run_pull(f"{http_server.url}/m.bin")
    assert result.code == contract.EXIT_OK, result.stderr
    assert "download stalled: no bytes for 1s; retry 1/2" in result.stderr
    assert route.requests == 2
    assert (result.dest / "m.bin").read_bytes() == BODY


def test_download_stalling_every_time_fails_transient(
    http_server: FaultyHTTPServer, run_pull: PullRunner
) -> None:
    http_server.routes["/m.bin"] = Route(BODY, fault="stall")
    result = run_pull(f"{http_server.url}/m.bin", env={contract.ENV_PULL_RETRIES: "1"})
    assert_failed(
        result,
        TRANSIENT,
        contract.REASON_TRANSIENT,
        "download stalled: no bytes for 1s",
        "gave up after 2 attempts",
    )


def test_refused_connection_is_transient(run_pull: PullRunner) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        result = run_pull(f"http://127.0.0.1:{port}/m.bin")
    assert_failed(result, TRANSIENT, contract.REASON_TRANSIENT, "ConnectError")


@pytest.mark.parametrize("ranges", [True, False], ids=["server honours ranges", "server ignores ranges"])
def test_a_byte_range_is_exactly_what_was_asked(http_server: FaultyHTTPServer, ranges: bool) -> None:
    """[offset, end) of the file, as a ranged download stitches it: a 206, or the whole body cut to it."""
    http_server.routes["/m.bin"] = route = Route(BODY, ranges=ranges)
    client = http_client(Settings())
    try:
        for start, end in [(0, 100), (1000, len(BODY) // 2), (len(BODY) - 7, len(BODY)), (3, None)]:
            got = b"".join(stream_url(client, f"{http_server.url}/m.bin", Settings(), offset=start, end=end))
            assert got == BODY[start:end]
    finally:
        client.close()
    assert route.range_headers[:2] == ["bytes=0-99", f"bytes=1000-{len(BODY) // 2 - 1}"]
