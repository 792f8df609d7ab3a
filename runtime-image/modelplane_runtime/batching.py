"""Adaptive batching: concurrent requests coalesce into one model call.

One dispatcher per worker process calls the model, one call at a time, and every request goes
through its queue. Whether requests coalesce is decided from the queue as it is, at every call:
a request that finds nothing else waiting is called at once, alone (nothing waits at concurrency
1); requests that queued up meanwhile (while a call ran, or that arrived in the same turn of the
event loop) go together, up to ``max_batch_size`` rows, and such a batch keeps taking requests
that are already arriving for at most ``max_latency`` after its first, never waiting on an idle
connection. No timing decides it, so a model batches the same way after every start, however
fast it is. The queue is bounded: past ``max_queue`` waiting requests, :class:`Overloaded` (503)
instead of unbounded memory.

Where a call runs is the one thing its duration decides, continuously (the median of the last
calls): short calls run on the event loop, where a thread hop would cost more than the call;
longer ones on a thread, so the loop keeps reading requests, answering probes and timing out
requests meanwhile. Both coalesce alike. A call's duration is the CPU time it took when it never
waited (so that a busy machine, preempting a short call, does not push it onto a thread, where
each request would then cost two thread wake-ups more), and its wall time when it did wait
(I/O, a sleep, a lock: the time it would hold the loop).

The data plane composes the batcher; formats never see it.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelplane_runtime.errors import InvalidInput, ModelError, Overloaded
from modelplane_runtime.formats.base import Arrays

RECENT_CALLS = 16
PredictFn = Callable[[Arrays, tuple[str, ...]], Arrays]
#: Called once per model call with its rows, how long each request in it waited, and whether the
#: call was held open to take requests still arriving (the only wait batching adds).
BatchObserver = Callable[[int, Sequence[float], bool], None]


@dataclass(frozen=True)
class BatchingConfig:
    enabled: bool = True
    max_batch_size: int = 64  # rows per model call
    max_latency: float = 0.005  # seconds a batch may wait to fill once others are queued
    max_queue: int = 256  # requests waiting; more get 503
    inline_below: float = 0.002  # calls typically shorter than this (seconds) run on the event loop


@dataclass
class _Item:
    inputs: Arrays
    outputs: tuple[str, ...]
    rows: int
    key: tuple[Any, ...]
    future: asyncio.Future[Arrays]
    enqueued: float = field(default_factory=time.perf_counter)


def voluntary_switches() -> int | None:
    """How often this thread gave up the CPU by itself (to wait on I/O, a lock, a sleep), as Linux
    counts it; None where the count per thread is not available (every call then counts its wall time)."""
    who = getattr(resource, "RUSAGE_THREAD", None)
    return None if who is None else resource.getrusage(who).ru_nvcsw


def call_duration(wall: float, cpu: float, waited: bool) -> float:
    """How long a call holds whatever thread runs it: its CPU time if it never waited (time beyond
    that was the machine running something else), else its wall time."""
    return wall if waited else min(wall, cpu)


class Batcher:
    def __init__(
        self,
        predict: PredictFn,
        config: BatchingConfig,
        observe: BatchObserver | None = None,
        expected_call_seconds: float = 0.0,
    ) -> None:
        self._predict = predict
        # How long a call takes: the median of the last few, so that neither one call the OS
        # preempted nor one lucky call moves the model between the loop and the thread.
        self._recent_calls: deque[float] = deque([expected_call_seconds], maxlen=RECENT_CALLS)
        self._inline = expected_call_seconds < config.inline_below
        self._config = config
        self._max_rows = config.max_batch_size if config.enabled else 1
        self._observe = observe
        self._queue: deque[_Item] = deque()
        self._wakeup: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(self, inputs: Arrays, outputs: tuple[str, ...]) -> Arrays:
        if len(self._queue) >= self._config.max_queue:
            raise Overloaded(f"the request queue is full ({self._config.max_queue} waiting); retry later")
        loop = asyncio.get_running_loop()
        if self._dispatcher is None or self._dispatcher.done():
            self._wakeup = asyncio.Event()
            self._dispatcher = loop.create_task(self._dispatch())
        first = next(iter(inputs.values()))
        key = (outputs, *((name, array.dtype, array.shape[1:]) for name, array in inputs.items()))
        item = _Item(inputs, outputs, first.shape[0] if first.ndim else 1, key, loop.create_future())
        self._queue.append(item)
        assert self._wakeup is not None
        self._wakeup.set()
        return await item.future

    async def _dispatch(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._take()
            if not batch:
                continue
            held = len(batch) > 1 and sum(item.rows for item in batch) < self._max_rows
            if held:
                # Others were waiting, so more are likely arriving: let the batch take them.
                await self._fill(batch)
            started = time.perf_counter()
            if self._observe is not None:
                waits = [started - item.enqueued for item in batch]
                self._observe(sum(item.rows for item in batch), waits, held)
            await self._run(loop, batch)

    def _take(self) -> list[_Item]:
        """The oldest live request and the queued ones that stack with it, up to the row limit."""
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()  # timed out or cancelled while waiting
        if not self._queue:
            return []
        first = self._queue.popleft()
        batch, rows = [first], first.rows
        if self._max_rows > 1:
            kept: deque[_Item] = deque()
            while self._queue:
                item = self._queue.popleft()
                if item.future.done():
                    continue
                if item.key == first.key and rows + item.rows <= self._max_rows:
                    batch.append(item)
                    rows += item.rows
                else:
                    kept.append(item)
            self._queue = kept
        return batch

    async def _fill(self, batch: list[_Item]) -> None:
        """Take requests that arrive within a few loop turns, until the batch or its time is full."""
        deadline = batch[0].enqueued + self._config.max_latency
        rows = sum(item.rows for item in batch)
        while rows < self._max_rows and time.perf_counter() < deadline:
            # Two turns: one to read sockets that became readable, one to run their handlers.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            if not self._queue:
                return
            kept: deque[_Item] = deque()
            while self._queue:
                item = self._queue.popleft()
                if item.future.done():
                    continue
                if item.key == batch[0].key and rows + item.rows <= self._max_rows:
                    batch.append(item)
                    rows += item.rows
                else:
                    kept.append(item)
            self._queue = kept
            if kept:
                return  # something that cannot join waits: do not hold it up

    async def _call(
        self, loop: asyncio.AbstractEventLoop, inputs: Arrays, outputs: tuple[str, ...]
    ) -> Arrays:
        if self._inline:
            return self._timed_predict(inputs, outputs)
        return await loop.run_in_executor(self._executor, self._timed_predict, inputs, outputs)

    def _timed_predict(self, inputs: Arrays, outputs: tuple[str, ...]) -> Arrays:
        started, cpu_started, waits = time.perf_counter(), time.thread_time(), voluntary_switches()
        try:
            return self._predict(inputs, outputs)
        finally:
            wall, cpu = time.perf_counter() - started, time.thread_time() - cpu_started
            waited = waits is None or voluntary_switches() != waits
            self._note_duration(call_duration(wall, cpu, waited))

    def _note_duration(self, seconds: float) -> None:
        self._recent_calls.append(seconds)
        self._inline = statistics.median(self._recent_calls) < self._config.inline_below

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        live = [item for item in batch if not item.future.done()]
        if not live:
            return
        if len(live) == 1:
            inputs = live[0].inputs
        else:
            inputs = {name: np.concatenate([item.inputs[name] for item in live]) for name in live[0].inputs}
        try:
            outputs = await self._call(loop, inputs, live[0].outputs)
        except (ValueError, TypeError) as error:
            if len(live) > 1:
                # One request's values spoil the batch for all: answer each on its own.
                for item in live:
                    await self._run(loop, [item])
                return
            # The model refused the input (e.g. a value it cannot take): the client's to fix.
            self._fail(live, InvalidInput(f"the model rejected the input: {error}"))
            return
        except Exception as error:  # noqa: BLE001 - any failure of user model code is the batch's answer
            self._fail(live, ModelError(f"the model failed: {error!r}"))
            return
        if len(live) == 1:
            if not live[0].future.done():
                live[0].future.set_result(outputs)
            return
        total = sum(item.rows for item in live)
        if any(np.ndim(array) == 0 or len(array) != total for array in outputs.values()):
            self._fail(live, ModelError("the model returned outputs without one row per input row"))
            return
        start = 0
        for item in live:
            end = start + item.rows
            if not item.future.done():
                item.future.set_result({name: array[start:end] for name, array in outputs.items()})
            start = end

    @staticmethod
    def _fail(items: list[_Item], error: Exception) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(error)

    def close(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
