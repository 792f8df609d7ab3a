"""Startup: live at once, ready only after load and warm-up; a failed warm-up is a clear exit."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import modelplane_contract as contract

from tests.runtime.models import make_slow_model_dir
from tests.runtime.serving import start_server

SLOW = {contract.ENV_CUSTOM_CLASS: "tests.runtime.models:SlowModel"}


def test_live_while_the_model_loads_and_ready_only_after_warm_up(tmp_path: Path) -> None:
    model_dir = make_slow_model_dir(tmp_path / "model", 0.0)
    (model_dir / "load-seconds").write_text("4")
    server = start_server(model_dir, "custom", tmp_path, args=["--workers", "1"], env=SLOW)
    seen_loading = False
    try:
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=server.url, timeout=5) as client:
            while time.monotonic() < deadline:
                try:
                    ready = client.get(contract.READY_PATH)
                    live = client.get(contract.LIVE_PATH)
                except httpx.TransportError:
                    time.sleep(0.1)
                    continue
                assert live.status_code == 200
                if ready.status_code == 200:
                    break
                assert ready.status_code == 503
                assert ready.json() == {"ready": False}
                infer = client.post("/v2/models/model/infer", json={"inputs": []})
                assert infer.status_code == 503
                assert "not ready yet" in infer.json()["error"]
                seen_loading = True
                time.sleep(0.2)
            assert client.get(contract.READY_PATH).status_code == 200
            metrics = client.get(contract.METRICS_PATH).text
        assert seen_loading, "never saw the server live but not ready while the model loaded"
        load_line = next(
            line for line in metrics.splitlines() if line.startswith(contract.METRIC_MODEL_LOAD_SECONDS)
        )
        assert float(load_line.split()[-1]) >= 4
    finally:
        server.stop()


def test_a_failed_warm_up_exits_with_the_reason(tmp_path: Path) -> None:
    model_dir = make_slow_model_dir(tmp_path / "model", 0.0)
    (model_dir / "broken").write_text("")
    server = start_server(model_dir, "custom", tmp_path, args=["--workers", "1"], env=SLOW)
    assert server.process.wait(timeout=120) == 1
    assert (
        "ModelLoadFailed: the warm-up inference failed: RuntimeError('this model is broken')" in server.log()
    )
