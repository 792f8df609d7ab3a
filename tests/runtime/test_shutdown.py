"""SIGTERM: stop accepting, finish the requests in flight, exit within the grace period."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.runtime.models import make_slow_model_dir
from tests.runtime.serving import start_server
from tests.support.cluster import wait_until

REQUEST = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]}
GRACE_SECONDS = 15


def test_sigterm_drains_in_flight_requests_then_exits(tmp_path: Path) -> None:
    model_dir = make_slow_model_dir(tmp_path / "model", 1.0)
    server = start_server(
        model_dir,
        "custom",
        tmp_path,
        args=["--workers", "2", "--batching", "false", "--shutdown-grace-seconds", str(GRACE_SECONDS)],
        env={"MODELPLANE_CUSTOM_CLASS": "tests.runtime.models:SlowModel"},
    )
    try:
        server.wait_ready()

        async def scenario() -> tuple[list[httpx.Response], float]:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                in_flight = [
                    asyncio.ensure_future(client.post("/v2/models/model/infer", json=REQUEST))
                    for _ in range(4)
                ]
                await asyncio.sleep(0.5)  # all four are being served or queued
                server.process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                await asyncio.sleep(0.3)
                # Still draining (each worker has about 2 s of work left) but no longer accepting.
                assert not all(request.done() for request in in_flight)
                async with httpx.AsyncClient(base_url=server.url, timeout=5) as newcomer:
                    with pytest.raises(httpx.ConnectError):
                        await newcomer.get("/v2/health/live")
                responses = await asyncio.gather(*in_flight)
                return responses, signalled

        responses, signalled = asyncio.run(scenario())
        assert [response.status_code for response in responses] == [200] * 4
        assert all(response.json()["outputs"][0]["data"] == [3.0] for response in responses)
        server.process.wait(timeout=GRACE_SECONDS + 10)
        assert time.monotonic() - signalled < GRACE_SECONDS
        assert server.process.returncode == 0
    finally:
        server.stop()


def test_a_worker_that_dies_is_replaced_and_serving_goes_on(tmp_path: Path) -> None:
    model_dir = make_slow_model_dir(tmp_path / "model", 0.0)
    server = start_server(
        model_dir,
        "custom",
        tmp_path,
        args=["--workers", "2"],
        env={"MODELPLANE_CUSTOM_CLASS": "tests.runtime.models:SlowModel"},
    )
    try:
        server.wait_ready()
        before = server.worker_pids()
        assert len(before) == 2
        time.sleep(2.5)  # past the supervisor's "died right after starting" window
        os.kill(before[0], signal.SIGKILL)
        replaced = wait_until(
            "a new worker in place of the killed one",
            lambda: (lambda pids: pids if len(pids) == 2 and before[0] not in pids else None)(
                server.worker_pids()
            ),
            timeout=60,
            interval=0.2,
        )
        assert before[1] in replaced
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(10):
                response = client.post("/v2/models/model/infer", json=REQUEST)
                assert response.status_code == 200
    finally:
        assert server.stop() == 0


def test_sigterm_with_a_drain_serves_on_closing_connections_then_stops_accepting(tmp_path: Path) -> None:
    """With --drain-seconds (the operator sets it) a SIGTERM first drains: readiness fails and every
    answer says ``Connection: close``, so a Service drops the pod and kept-alive clients reconnect
    elsewhere, while requests still arriving are served; only then are connections refused."""
    drain = 3.0
    model_dir = make_slow_model_dir(tmp_path / "model", 0.0)
    server = start_server(
        model_dir,
        "custom",
        tmp_path,
        args=["--workers", "2", "--drain-seconds", str(drain), "--shutdown-grace-seconds", "5"],
        env={"MODELPLANE_CUSTOM_CLASS": "tests.runtime.models:SlowModel"},
    )
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=10) as kept_alive:
            response = kept_alive.post("/v2/models/model/infer", json=REQUEST)
            assert response.status_code == 200
            assert "connection" not in response.headers
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()

            def draining() -> httpx.Response | None:
                answer = kept_alive.get("/v2/health/ready")
                return answer if answer.status_code == 503 else None

            ready = wait_until("readiness to fail", draining, timeout=drain, interval=0.05)
            assert ready.headers["connection"] == "close"
            for _ in range(4):  # on new connections each time: every answer closes its own
                response = kept_alive.post("/v2/models/model/infer", json=REQUEST)
                assert response.status_code == 200
                assert response.headers["connection"] == "close"
            assert time.monotonic() - signalled < drain

        def refused() -> bool:
            try:
                httpx.get(f"{server.url}/v2/health/live", timeout=2)
            except httpx.ConnectError:
                return True
            return False

        wait_until("connections refused after the drain", refused, timeout=drain + 10, interval=0.1)
        assert time.monotonic() - signalled >= drain
        server.process.wait(timeout=20)
        assert server.process.returncode == 0
    finally:
        server.stop()
