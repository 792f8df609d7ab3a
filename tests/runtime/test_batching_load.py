"""Batching follows the load, the same after every start: real servers, read from their metrics.

The same model is served several times from scratch. Each time, requests sent one after another
(concurrency 1) are called alone and never held for a batch; 32 connections that each have a
request waiting coalesce (a mean batch above 1). Nothing here times anything: the figures are the
runtime's own batch metrics.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import modelplane_contract as contract
import numpy as np
import orjson
import pytest
import skops.io
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests.runtime.serving import RunningServer, serving

STARTS = 3
FEATURES, TARGET = make_classification(n_samples=500, n_features=8, random_state=0)
SEQUENTIAL_REQUESTS = 150
CONCURRENT_CONNECTIONS = 32
CONCURRENT_ROUNDS = 25


def save_sklearn_pipeline(model_dir: Path) -> str:
    skops.io.dump(
        make_pipeline(StandardScaler(), LogisticRegression()).fit(FEATURES, TARGET), model_dir / "model.skops"
    )
    return "sklearn"


def save_xgboost(model_dir: Path) -> str:
    import xgboost

    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3}, xgboost.DMatrix(FEATURES, label=TARGET), 20
    )
    booster.save_model(str(model_dir / "model.json"))
    return "xgboost"


MODELS: dict[str, Callable[[Path], str]] = {
    "sklearn-pipeline": save_sklearn_pipeline,
    "xgboost": save_xgboost,  # a fast model from another library, which batched only when slow enough
}


def request_bytes(port: int, row: np.ndarray[Any, Any], datatype: str) -> bytes:
    body = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [1, len(row)], "datatype": datatype, "data": row.tolist()}]}
    )
    head = (
        f"POST /v2/models/model/infer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """One kept-alive HTTP/1.1 connection: send a request now, read its response later."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buffer = b""

    def send(self, request: bytes) -> None:
        self.sock.sendall(request)

    def response(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._read()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        length = next(
            int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")
        )
        while len(rest) < length:
            rest += self._read()
        self.buffer = rest[length:]
        return int(lines[0].split()[1]), rest[:length]

    def _read(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


@contextmanager
def connections(port: int, count: int) -> Iterator[list[Connection]]:
    with ExitStack() as stack:
        opened = []
        for _ in range(count):
            connection = Connection(port)
            stack.callback(connection.close)
            opened.append(connection)
        yield opened


def batch_figures(server: RunningServer) -> tuple[float, float, float]:
    """Model calls, rows and calls held for a batch so far, from the server's /metrics."""
    text = httpx.get(f"{server.url}{contract.METRICS_PATH}", timeout=10).text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return (
        values.get(f"{contract.METRIC_BATCH_SIZE}_count", 0.0),
        values.get(f"{contract.METRIC_BATCH_SIZE}_sum", 0.0),
        values.get(contract.METRIC_BATCH_FILL_WAITS_TOTAL, 0.0),
    )


def check(status: int, body: bytes) -> None:
    assert status == 200, body
    assert len(orjson.loads(body)["outputs"][0]["data"]) == 1


@pytest.mark.parametrize("model", sorted(MODELS))
def test_batching_follows_the_load_the_same_after_every_start(model: str, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model_format = MODELS[model](model_dir)
    datatype = "FP32" if model_format == "xgboost" else "FP64"
    for start in range(STARTS):
        logs = tmp_path / f"logs-{start}"
        logs.mkdir()
        with serving(model_dir, model_format, logs, args=["--workers", "1", "--protocols", "v2"]) as server:
            requests = [request_bytes(server.http_port, row, datatype) for row in FEATURES[:64]]

            with connections(server.http_port, 1) as (connection,):
                for index in range(SEQUENTIAL_REQUESTS):
                    connection.send(requests[index % len(requests)])
                    check(*connection.response())
            calls, rows, held = batch_figures(server)
            assert (calls, rows, held) == (SEQUENTIAL_REQUESTS, SEQUENTIAL_REQUESTS, 0), (start, server.log())

            with connections(server.http_port, CONCURRENT_CONNECTIONS) as opened:
                for round_ in range(CONCURRENT_ROUNDS):
                    for index, connection in enumerate(opened):
                        connection.send(requests[(round_ + index) % len(requests)])
                    for connection in opened:
                        check(*connection.response())
            total_calls, total_rows, _ = batch_figures(server)
            concurrent_calls = total_calls - calls
            concurrent_rows = total_rows - rows
            assert concurrent_rows == CONCURRENT_CONNECTIONS * CONCURRENT_ROUNDS
            assert concurrent_rows / concurrent_calls > 1, (start, concurrent_calls)
