"""Fixtures of the pull tests: real servers (a local HTTP server, a Hub-layout server, SeaweedFS,
fake-gcs-server), a fault-injecting TCP proxy, and a runner for `pull` that returns what a pod shows."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import modelplane_contract as contract
import pytest
from modelplane_runtime.pull import main as pull_main
from modelplane_runtime.storage.digest import manifest_digest

from tests.support.cluster import REPO_ROOT, make_print, wait_until
from tests.support.net import free_port
from tests.support.s3 import S3Server

# Short limits keep failure tests fast: a stall is seen after 1 s, retries wait 50 ms.
FAST_PULL_ENV = {
    contract.ENV_PULL_STALL_SECONDS: "1",
    contract.ENV_PULL_RETRIES: "2",
    contract.ENV_PULL_BACKOFF_SECONDS: "0.05",
}


@dataclass
class PullResult:
    code: int
    stderr: str
    termination_log: str
    dest: Path

    @property
    def reason_line(self) -> str:
        """The last stderr line: the one-line failure reason in the contract's format."""
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""

    def record(self) -> dict[str, object]:
        import json

        data: dict[str, object] = json.loads((self.dest / contract.PULL_RECORD_FILE).read_text())
        return data


PullRunner = Callable[..., PullResult]


@pytest.fixture
def run_pull(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> PullRunner:
    """Runs `pull` in this process (its `main`, as the CLI does) with FAST_PULL_ENV plus ENV.

    A termination log file exists, as the kubelet's does, so tests see what the operator would.
    """
    for name, value in FAST_PULL_ENV.items():
        monkeypatch.setenv(name, value)
    termination_log = tmp_path / "termination-log"

    def run(uri: str, *args: str, dest: Path | None = None, env: dict[str, str] | None = None) -> PullResult:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        target = dest or tmp_path / f"model-{uuid.uuid4().hex[:6]}"
        termination_log.write_text("")
        capfd.readouterr()
        code = pull_main(
            ["--uri", uri, "--dest", str(target), "--termination-log", str(termination_log), *args]
        )
        captured = capfd.readouterr()
        return PullResult(code, captured.err, termination_log.read_text().strip(), target)

    return run


def assert_failed(result: PullResult, code: int, reason: str, *fragments: str) -> None:
    """The pull failed with CODE and a one-line REASON message (also in the termination log)."""
    assert result.code == code, result.stderr
    line = result.reason_line
    assert line.startswith(f"{reason}: "), result.stderr
    assert result.termination_log == line
    assert contract.parse_termination_message(line).reason == reason
    for fragment in fragments:
        assert fragment in line, line
    assert not result.dest.exists() or not (result.dest / contract.PULL_RECORD_FILE).exists()


def sha256(data: bytes) -> str:
    """The digest `pull --digest` takes for a file of DATA (what `sha256sum` prints, prefixed)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tree_digest(files: dict[str, bytes]) -> str:
    """The digest of a directory holding FILES (relpath -> bytes), from the documented manifest."""
    return manifest_digest({relpath: hashlib.sha256(data).hexdigest() for relpath, data in files.items()})


# --- a real HTTP server with faults ---------------------------------------------------------------


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    fault: str | None = None  # "cut": close after half the body; "stall": send half, then nothing
    faulty_requests: int = 1 << 30  # how many requests get the fault (then the body is served whole)
    require_header: tuple[str, str] | None = None  # answered 401 without it
    headers: dict[str, str] = field(default_factory=dict)
    ranges: bool = False  # honour "Range: bytes=N-[M]" with 206 (otherwise ignore it, as some servers do)
    requests: int = 0
    range_headers: list[str] = field(default_factory=list)


class FaultyHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients here hang up mid-request on purpose (retries, cuts, stalls): not an error of the server,
        # and printing it from a handler thread after the test's capture has closed fails the teardown.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: FaultyHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib signature
        pass

    def do_GET(self) -> None:
        route = self.server.routes.get(self.path.split("?")[0])
        if route is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        route.requests += 1
        if route.require_header and self.headers.get(route.require_header[0]) != route.require_header[1]:
            self.send_response(401)
            for name, value in route.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, status = route.body, route.status
        requested_range = self.headers.get("Range")
        if requested_range:
            route.range_headers.append(requested_range)
        if route.ranges and requested_range and status == 200:
            first, _, last = requested_range.removeprefix("bytes=").partition("-")
            start, stop = int(first), int(last) + 1 if last else len(body)
            body, status = body[start:stop], 206
            route.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(route.body)}"
        self.send_response(status)
        for name, value in route.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        faulty = route.fault is not None and route.requests <= route.faulty_requests
        if not faulty:
            self.wfile.write(body)
            return
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        if route.fault == "stall":
            self.server.release.wait(30)
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def http_server() -> Iterator[FaultyHTTPServer]:
    server = FaultyHTTPServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


# --- a TCP proxy that cuts or stalls the first connections, in front of a real server -------------


class FaultProxy:
    """Forwards 127.0.0.1:PORT to UPSTREAM; the first FAULTY connections get FAULT after AFTER bytes
    of response (closed: "cut", or left hanging: "stall")."""

    def __init__(self, upstream: tuple[str, int], fault: str, after: int, faulty: int) -> None:
        self.upstream, self.fault, self.after, self.faulty = upstream, fault, after, faulty
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        self.release = threading.Event()
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            faulty = self.connections <= self.faulty
            threading.Thread(target=self._pipe, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, faulty), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, faulty: bool | None) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                if faulty and sent + len(data) > self.after:
                    sink.sendall(data[: self.after - sent])
                    if self.fault == "stall":
                        self.release.wait(30)
                    break
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.release.set()
        for s in self.sockets:
            s.close()


@pytest.fixture
def fault_proxy() -> Iterator[Callable[[tuple[str, int], str, int, int], FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make(upstream: tuple[str, int], fault: str, after: int, faulty: int = 1) -> FaultProxy:
        proxies.append(FaultProxy(upstream, fault, after, faulty))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


# --- the S3 server of `make s3` (the `s3` fixture of tests/support/s3.py) ----------------------------


@pytest.fixture
def s3_prefix(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh key prefix in the bucket; the process env points at the server. The objects under it
    (and under its siblings, PREFIX-*) are deleted after the test: the server is shared."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    prefix = f"pull-tests/{uuid.uuid4().hex[:10]}"
    yield prefix
    client = s3.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=s3.bucket, Key=item["Key"])


# --- fake-gcs-server, built from its Go module by `make fake-gcs-server` ---------------------------


@pytest.fixture(scope="session")
def fake_gcs_server() -> Iterator[str]:
    """fake-gcs-server on a free loopback port, in memory; yields its URL (STORAGE_EMULATOR_HOST)."""
    subprocess.run(
        ["make", "-s", "--no-print-directory", "fake-gcs-server"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    binary = Path(make_print("bin-dir")) / "fake-gcs-server"
    port = free_port()
    process = subprocess.Popen(
        [
            str(binary),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-backend",
            "memory",
            "-log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            f"fake-gcs-server to listen on {port}",
            lambda: _listening(port, process),
            timeout=30,
            interval=0.1,
        )
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _listening(port: int, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"fake-gcs-server exited with {process.returncode}")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True
