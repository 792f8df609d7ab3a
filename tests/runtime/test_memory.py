"""The model is loaded once per pod: 4 workers of a >=100 MB model cost under 1.3x one worker."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import skops.io
from sklearn.neighbors import KNeighborsClassifier

from tests.runtime.serving import RunningServer, serving

MODEL_BYTES = 128 * 1024 * 1024


def pss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no Pss in smaps_rollup of {pid}")


def total_pss(server: RunningServer) -> int:
    # Serve a few requests first so every worker has touched what serving touches.
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(8):
            response = client.post("/v1/models/model:predict", json={"instances": [[0.5] * 64]})
            assert response.status_code == 200, response.text
    return sum(pss_bytes(pid) for pid in server.pids())


@pytest.fixture(scope="module")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A k-nearest-neighbours classifier keeps its training set: 128 MiB of float64."""
    rng = np.random.default_rng(0)
    rows = MODEL_BYTES // (64 * 8)
    features = rng.random((rows, 64))
    estimator = KNeighborsClassifier(n_neighbors=3, algorithm="brute").fit(features, rng.integers(0, 3, rows))
    model_dir = tmp_path_factory.mktemp("knn")
    skops.io.dump(estimator, model_dir / "model.skops")
    return model_dir


def test_four_workers_share_one_copy_of_the_model(big_model: Path, tmp_path: Path) -> None:
    common = ["--protocols", "v1,v2", "--batching", "false"]
    with serving(big_model, "sklearn", tmp_path, args=["--workers", "1", *common]) as one:
        one_worker = total_pss(one)
    with serving(big_model, "sklearn", tmp_path, args=["--workers", "4", *common]) as four:
        assert len(four.worker_pids()) == 4
        four_workers = total_pss(four)
    assert one_worker > MODEL_BYTES
    assert four_workers < 1.3 * one_worker, (four_workers / 2**20, one_worker / 2**20)
