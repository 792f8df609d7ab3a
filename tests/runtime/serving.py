"""Run `modelplane-runtime serve` as a real process on free ports, for the runtime's tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.cluster import REPO_ROOT
from tests.support.net import free_port

RUNTIME_COMMAND = str(Path(sys.executable).parent / "modelplane-runtime")
# Startup includes importing scikit-learn and skops; the shared 2-core machine can be slow.
READY_TIMEOUT_SECONDS = 180.0


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    name: str
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def pids(self) -> list[int]:
        return [self.process.pid, *self.worker_pids()]

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
                try:
                    if client.get(f"{self.url}/v2/health/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        raise AssertionError(f"server not ready within {timeout:.0f} s:\n{self.log()}")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    model_dir: Path,
    model_format: str,
    log_dir: Path,
    *,
    name: str = "model",
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> RunningServer:
    http_port, grpc_port = free_port(), free_port()
    log_path = log_dir / f"server-{http_port}.log"
    command = [
        RUNTIME_COMMAND,
        "serve",
        "--model-dir",
        str(model_dir),
        "--format",
        model_format,
        "--name",
        name,
        "--host",
        "127.0.0.1",
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        *args,
    ]
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=full_env)
    return RunningServer(process, http_port, grpc_port, name, log_path)


@contextmanager
def serving(
    model_dir: Path,
    model_format: str,
    log_dir: Path,
    *,
    name: str = "model",
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[RunningServer]:
    server = start_server(model_dir, model_format, log_dir, name=name, args=args, env=env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
