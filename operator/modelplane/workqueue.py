"""A de-duplicating, rate-limited work queue of keys, as client-go's workqueue behaves.

- A key added while it waits is not queued twice; a key added while a worker processes it is queued
  again once that worker is done (so no two workers ever hold one key, and no change is missed).
- ``add_rate_limited`` queues a key after a per-key exponential backoff (base doubling up to a cap,
  with jitter, so keys that failed together do not retry together); ``forget`` resets the backoff.
- The metrics are controller-runtime's (workqueue_depth, workqueue_adds_total, workqueue_retries_total,
  workqueue_queue_duration_seconds, workqueue_work_duration_seconds, workqueue_unfinished_work_seconds,
  workqueue_longest_running_processor_seconds), labelled with the queue's name.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from modelplane import metrics

K = TypeVar("K", bound=Hashable)


class Backoff:
    """base x 2^failures, capped, times a random factor in [1 - jitter, 1]."""

    def __init__(
        self,
        base: float,
        cap: float,
        jitter: float = 0.2,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.base, self.cap, self.jitter = base, cap, jitter
        self._rand = rand

    def delay(self, failures: int) -> float:
        raw: float = min(self.cap, self.base * 2.0 ** min(failures, 64))
        return raw * (1 - self.jitter * self._rand())


class WorkQueue(Generic[K]):
    def __init__(self, name: str, backoff: Backoff, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._backoff = backoff
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: dict[K, float] = {}  # key -> when its processing started
        self._added_at: dict[K, float] = {}
        self._waiting: list[tuple[float, int, K]] = []  # heap of (due, seq, key)
        self._due: dict[K, float] = {}
        self._seq = 0
        self._failures: dict[K, int] = {}
        self._shutdown = False
        labels = {"name": name, "controller": name}
        self._depth = metrics.WORKQUEUE_DEPTH.labels(**labels)
        self._adds = metrics.WORKQUEUE_ADDS.labels(**labels)
        self._retries = metrics.WORKQUEUE_RETRIES.labels(**labels)
        self._queue_duration = metrics.WORKQUEUE_QUEUE_DURATION.labels(**labels)
        self._work_duration = metrics.WORKQUEUE_WORK_DURATION.labels(**labels)
        metrics.WORKQUEUE_UNFINISHED_WORK.labels(**labels).set_function(self._unfinished_seconds)
        metrics.WORKQUEUE_LONGEST_RUNNING.labels(**labels).set_function(self._longest_running_seconds)

    # Producers

    def add(self, key: K) -> None:
        with self._cond:
            self._add(key)

    def add_after(self, key: K, delay: float) -> None:
        """Queue KEY in DELAY seconds (an earlier due time already set for it wins)."""
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutdown:
                return
            due = self._clock() + delay
            if key in self._due and self._due[key] <= due:
                return
            self._due[key] = due
            self._seq += 1
            heapq.heappush(self._waiting, (due, self._seq, key))
            self._cond.notify_all()

    def add_rate_limited(self, key: K) -> float:
        """Queue KEY after its backoff; returns the delay chosen."""
        with self._cond:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
        self._retries.inc()
        delay = self._backoff.delay(failures)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """KEY succeeded (or failed in a way retrying cannot fix): its backoff starts over."""
        with self._cond:
            self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    def discard(self, key: K) -> None:
        """KEY is gone: drop its pending retry and its backoff (a queued add still runs once)."""
        with self._cond:
            self._failures.pop(key, None)
            self._due.pop(key, None)  # its heap entry is skipped when it comes due

    # Consumers

    def get(self, timeout: float | None = None) -> K | None:
        """The next key (now owned by the caller until ``done``), or None on shutdown or timeout."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                self._promote_due()
                if self._queue:
                    key = self._queue.popleft()
                    self._dirty.discard(key)
                    now = self._clock()
                    self._processing[key] = now
                    self._queue_duration.observe(now - self._added_at.pop(key, now))
                    self._depth.set(len(self._queue))
                    return key
                if self._shutdown:
                    return None
                wait = None if not self._waiting else max(0.0, self._waiting[0][0] - self._clock())
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def done(self, key: K) -> None:
        with self._cond:
            started = self._processing.pop(key, None)
            if started is not None:
                self._work_duration.observe(self._clock() - started)
            if key in self._dirty:
                self._queue.append(key)
                self._depth.set(len(self._queue))
                self._cond.notify()

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    # Plumbing (called with the lock held)

    def _add(self, key: K) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._adds.inc()
        self._dirty.add(key)
        self._added_at.setdefault(key, self._clock())
        if key in self._processing:
            return  # queued again by done()
        self._queue.append(key)
        self._depth.set(len(self._queue))
        self._cond.notify()

    def _promote_due(self) -> None:
        now = self._clock()
        while self._waiting and self._waiting[0][0] <= now:
            due, _, key = heapq.heappop(self._waiting)
            if self._due.get(key) == due:
                del self._due[key]
                self._add(key)

    def _unfinished_seconds(self) -> float:
        with self._cond:
            now = self._clock()
            return sum(now - started for started in self._processing.values())

    def _longest_running_seconds(self) -> float:
        with self._cond:
            now = self._clock()
            return max((now - started for started in self._processing.values()), default=0.0)
