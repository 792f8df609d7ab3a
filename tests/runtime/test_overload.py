"""Backpressure and timeouts: a bounded queue answers 503 with Retry-After; slow calls get 504."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from modelplane_runtime.dataplane import DataPlane
from modelplane_runtime.rest import RestApp
from modelplane_runtime.server import ServeConfig, load

from tests.runtime.asgi import call_json
from tests.runtime.models import make_slow_model_dir
from tests.runtime.serving import RunningServer, serving

SLOW_CLASS = "tests.runtime.models:SlowModel"
REQUEST = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]}
MAX_QUEUE = 4
BURST = 60


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    model_dir = make_slow_model_dir(tmp_path_factory.mktemp("slow"), 0.1)
    args = ["--workers", "1", "--batching", "false", "--max-queue", str(MAX_QUEUE), "--protocols", "v1,v2"]
    with serving(
        model_dir,
        "custom",
        tmp_path_factory.mktemp("logs"),
        args=args,
        env={"MODELPLANE_CUSTOM_CLASS": SLOW_CLASS},
    ) as server:
        yield server


async def burst(url: str, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        return await asyncio.gather(
            *(client.post("/v2/models/model/infer", json=REQUEST) for _ in range(count))
        )


def test_more_requests_than_the_queue_holds_get_503_and_the_server_stays_up(
    slow_server: RunningServer,
) -> None:
    (worker,) = slow_server.worker_pids()
    asyncio.run(burst(slow_server.url, 4))  # warm the worker's pools before measuring
    rss_before = rss_bytes(worker)

    responses = asyncio.run(burst(slow_server.url, BURST))

    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {200, 503}, statuses
    served, refused = statuses.count(200), statuses.count(503)
    assert served >= 1
    assert refused >= BURST // 2
    rejection = next(response for response in responses if response.status_code == 503)
    assert rejection.headers["retry-after"] == "1"
    assert "queue is full" in rejection.json()["error"]
    for response in responses:
        if response.status_code == 200:
            assert response.json()["outputs"][0]["data"] == [3.0]

    assert slow_server.process.poll() is None
    assert slow_server.worker_pids() == [worker]  # the same worker, not a restarted one
    assert httpx.get(f"{slow_server.url}/v2/health/ready").status_code == 200
    assert rss_bytes(worker) - rss_before < 50 * 1024 * 1024


def test_a_call_slower_than_the_request_timeout_gets_504(tmp_path: Path) -> None:
    model_dir = make_slow_model_dir(tmp_path, 0.5)
    model = load(ServeConfig(model_dir=model_dir, format="custom", name="m", custom_class=SLOW_CLASS))
    app = RestApp(DataPlane("m", model, request_timeout=0.05))
    status, body = call_json(app, "POST", "/v2/models/m/infer", REQUEST)
    assert status == 504
    assert body == {"error": "inference took longer than 0.05 s"}
    assert np.isclose(model.call_seconds, 0.5, atol=0.4)
