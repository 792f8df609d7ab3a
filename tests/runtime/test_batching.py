"""The adaptive batcher, driven on a real event loop with a real (numpy) model function."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest
from modelplane_runtime.batching import Batcher, BatchingConfig
from modelplane_runtime.errors import InvalidInput, Overloaded
from modelplane_runtime.formats.base import Arrays


class RecordingModel:
    """Doubles its input; records the rows of every call; each call takes ``seconds``."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.calls: list[int] = []
        self.threads: set[str] = set()

    def __call__(self, inputs: Arrays, outputs: tuple[str, ...]) -> Arrays:
        features = inputs["x"]
        if (features < 0).any():
            raise ValueError("negative values are not allowed")
        self.calls.append(len(features))
        self.threads.add(threading.current_thread().name)
        if self.seconds:
            time.sleep(self.seconds)
        return {"y": features[:, 0] * 2}


def rows(*values: float) -> Arrays:
    return {"x": np.array([[value] for value in values])}


async def submit_all(batcher: Batcher, requests: list[Arrays]) -> list[Any]:
    return await asyncio.gather(*(batcher.submit(r, ("y",)) for r in requests), return_exceptions=True)


def test_a_lone_request_runs_at_once_without_waiting_for_a_batch() -> None:
    model = RecordingModel(seconds=0.001)
    batcher = Batcher(model, BatchingConfig(max_latency=5.0), expected_call_seconds=0.001)

    async def scenario() -> float:
        started = time.perf_counter()
        result = await batcher.submit(rows(3), ("y",))
        assert result["y"].tolist() == [6]
        return time.perf_counter() - started

    assert asyncio.run(scenario()) < 1.0  # far below the 5 s batch window
    assert model.calls == [1]
    batcher.close()


def test_concurrent_requests_coalesce_and_each_gets_its_own_rows() -> None:
    model = RecordingModel(seconds=0.05)
    batcher = Batcher(model, BatchingConfig(max_batch_size=64), expected_call_seconds=0.05)
    requests = [rows(i, i + 0.5) for i in range(20)]
    results = asyncio.run(submit_all(batcher, requests))
    for i, result in enumerate(results):
        assert result["y"].tolist() == [2 * i, 2 * i + 1]
    assert sum(model.calls) == 40
    assert len(model.calls) < 20
    assert max(model.calls) <= 64
    assert model.threads == {"model_0"}  # a slow model runs off the event loop
    batcher.close()


def test_requests_arriving_during_a_call_go_together_in_the_next() -> None:
    model = RecordingModel(seconds=0.1)
    batcher = Batcher(model, BatchingConfig(), expected_call_seconds=0.1)

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(batcher.submit(rows(0), ("y",)))
        await asyncio.sleep(0.03)  # the first call is running now
        later = await submit_all(batcher, [rows(i) for i in range(1, 11)])
        return [await first, *later]

    results = asyncio.run(scenario())
    assert [r["y"].tolist() for r in results] == [[2 * i] for i in range(11)]
    assert model.calls == [1, 10]
    batcher.close()


def test_batches_never_exceed_max_batch_size() -> None:
    model = RecordingModel(seconds=0.02)
    batcher = Batcher(model, BatchingConfig(max_batch_size=4), expected_call_seconds=0.02)
    results = asyncio.run(submit_all(batcher, [rows(i) for i in range(17)]))
    assert [result["y"].tolist() for result in results] == [[2 * i] for i in range(17)]
    assert max(model.calls) <= 4
    batcher.close()


def test_batching_disabled_calls_the_model_once_per_request() -> None:
    model = RecordingModel(seconds=0.01)
    batcher = Batcher(model, BatchingConfig(enabled=False), expected_call_seconds=0.01)
    asyncio.run(submit_all(batcher, [rows(i) for i in range(6)]))
    assert model.calls == [1] * 6
    batcher.close()


def test_a_full_queue_refuses_with_overloaded() -> None:
    model = RecordingModel(seconds=0.05)
    batcher = Batcher(model, BatchingConfig(max_queue=3, enabled=False), expected_call_seconds=0.05)
    results = asyncio.run(submit_all(batcher, [rows(i) for i in range(10)]))
    refused = [r for r in results if isinstance(r, Overloaded)]
    served = [r for r in results if isinstance(r, dict)]
    assert refused
    assert served
    assert len(served) <= 4  # one running plus at most three queued
    assert "queue is full" in str(refused[0])
    batcher.close()


def test_one_bad_request_does_not_spoil_its_batch() -> None:
    model = RecordingModel(seconds=0.02)
    batcher = Batcher(model, BatchingConfig(), expected_call_seconds=0.02)
    results = asyncio.run(submit_all(batcher, [rows(1), rows(2), rows(-1), rows(3)]))
    assert results[0]["y"].tolist() == [2]
    assert results[1]["y"].tolist() == [4]
    assert isinstance(results[2], InvalidInput)
    assert "negative values" in str(results[2])
    assert results[3]["y"].tolist() == [6]
    batcher.close()


def test_fast_models_run_on_the_event_loop_thread() -> None:
    model = RecordingModel()
    batcher = Batcher(model, BatchingConfig(inline_below=1.0), expected_call_seconds=0.0)
    results = asyncio.run(submit_all(batcher, [rows(i) for i in range(5)]))
    assert [r["y"].tolist() for r in results] == [[0], [2], [4], [6], [8]]
    assert model.threads == {threading.main_thread().name}
    batcher.close()


def test_requests_of_different_shapes_are_not_stacked() -> None:
    calls: list[tuple[int, ...]] = []

    def model(inputs: Arrays, outputs: tuple[str, ...]) -> Arrays:
        calls.append(inputs["x"].shape)
        time.sleep(0.02)
        return {"y": inputs["x"].sum(axis=1)}

    batcher = Batcher(model, BatchingConfig(), expected_call_seconds=0.02)
    requests = [
        {"x": np.ones((1, 2))},
        {"x": np.ones((1, 3))},
        {"x": np.ones((1, 2))},
        {"x": np.ones((1, 3))},
    ]
    results = asyncio.run(submit_all(batcher, requests))
    assert [r["y"].tolist() for r in results] == [[2.0], [3.0], [2.0], [3.0]]
    assert all(shape[1] in (2, 3) for shape in calls)
    batcher.close()


@pytest.mark.parametrize("enabled", [True, False])
def test_metrics_observer_sees_rows_and_waits(enabled: bool) -> None:
    seen: list[tuple[int, int, bool]] = []
    model = RecordingModel(seconds=0.01)
    batcher = Batcher(
        model,
        BatchingConfig(enabled=enabled),
        observe=lambda n, waits, held: seen.append((n, len(waits), held)),
        expected_call_seconds=0.01,
    )
    asyncio.run(submit_all(batcher, [rows(i) for i in range(5)]))
    assert sum(n for n, _, _ in seen) == 5
    assert sum(w for _, w, _ in seen) == 5
    assert any(held for _, _, held in seen) is enabled  # only a batch of several is held open
    batcher.close()


@pytest.mark.parametrize("inline_below", [1.0, 0.0], ids=["on-the-loop", "on-a-thread"])
def test_a_fast_model_coalesces_requests_that_arrive_together(inline_below: float) -> None:
    """However fast the model is, and wherever it runs: what waits together goes together."""
    model = RecordingModel()
    batcher = Batcher(model, BatchingConfig(inline_below=inline_below), expected_call_seconds=0.0)
    results = asyncio.run(submit_all(batcher, [rows(i) for i in range(20)]))
    assert [r["y"].tolist() for r in results] == [[2 * i] for i in range(20)]
    assert model.calls == [20]
    batcher.close()


def test_requests_one_after_another_are_called_alone_and_never_held() -> None:
    seen: list[tuple[int, bool]] = []
    model = RecordingModel()
    batcher = Batcher(model, BatchingConfig(inline_below=1.0), lambda n, _, held: seen.append((n, held)))

    async def one_at_a_time() -> None:
        for i in range(10):
            assert (await batcher.submit(rows(i), ("y",)))["y"].tolist() == [2 * i]

    asyncio.run(one_at_a_time())
    assert seen == [(1, False)] * 10
    batcher.close()


def test_where_calls_run_follows_how_long_they_take() -> None:
    model = RecordingModel(seconds=0.01)  # well above inline_below
    batcher = Batcher(model, BatchingConfig(inline_below=0.002), expected_call_seconds=0.0)

    async def one_at_a_time(count: int) -> None:
        for i in range(count):
            await batcher.submit(rows(i), ("y",))

    asyncio.run(one_at_a_time(1))
    assert model.threads == {threading.main_thread().name}  # the first estimate said fast
    asyncio.run(one_at_a_time(10))
    assert "model_0" in model.threads  # the median of the last calls said slow
    batcher.close()


def test_a_call_that_never_waited_counts_its_cpu_time_and_one_that_waited_its_wall_time() -> None:
    from modelplane_runtime.batching import call_duration, voluntary_switches

    # Preempted on a busy machine: 3 ms went by, the call itself took 0.2 ms of CPU.
    assert call_duration(0.003, 0.0002, waited=False) == 0.0002
    # A sleep or I/O wait holds its thread for all of it.
    assert call_duration(0.003, 0.0002, waited=True) == 0.003
    before = voluntary_switches()
    time.sleep(0.01)
    after = voluntary_switches()
    if before is not None and after is not None:  # Linux counts them per thread
        assert after > before


def test_a_sleeping_model_goes_to_a_thread_though_it_takes_no_cpu() -> None:
    model = RecordingModel(seconds=0.01)  # sleeps: the loop would be held 10 ms per call
    batcher = Batcher(model, BatchingConfig(), expected_call_seconds=0.0)

    async def scenario() -> None:
        for _ in range(3):
            await batcher.submit(rows(1), ("y",))

    asyncio.run(scenario())
    assert not batcher._inline  # noqa: SLF001 - where the call runs is what this test is about
    batcher.close()
