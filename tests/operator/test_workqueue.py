"""The work queue: de-duplication, one worker per key, capped jittered backoff, controller-runtime metrics."""

from __future__ import annotations

import pytest
from modelplane.workqueue import Backoff, WorkQueue
from prometheus_client import REGISTRY


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def queue(clock: Clock, jitter: float = 0.0) -> WorkQueue[str]:
    return WorkQueue("unit", Backoff(1.0, 10.0, jitter=jitter, rand=lambda: 1.0), clock)


def test_a_waiting_key_is_queued_once() -> None:
    q = queue(Clock())
    for key in ("a", "b", "a", "a"):
        q.add(key)
    assert len(q) == 2
    assert [q.get(0), q.get(0), q.get(0)] == ["a", "b", None]


def test_a_key_added_while_processed_comes_back_once_after_done() -> None:
    q = queue(Clock())
    q.add("a")
    assert q.get(0) == "a"
    q.add("a")
    q.add("a")
    assert q.get(0) is None
    q.done("a")
    assert q.get(0) == "a"
    q.done("a")
    assert q.get(0) is None


def test_backoff_doubles_up_to_the_cap_and_forget_resets_it() -> None:
    clock = Clock()
    q = queue(clock)
    delays = [q.add_rate_limited("a") for _ in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    q.forget("a")
    assert q.add_rate_limited("a") == 1.0


def test_jitter_spreads_retries_below_the_nominal_delay() -> None:
    draws = iter([0.0, 0.5, 1.0])
    backoff = Backoff(4.0, 100.0, jitter=0.2, rand=lambda: next(draws))
    assert [backoff.delay(0), backoff.delay(0), backoff.delay(0)] == pytest.approx([4.0, 3.6, 3.2])


def test_a_delayed_key_comes_due_and_an_earlier_due_time_wins() -> None:
    clock = Clock()
    q = queue(clock)
    q.add_after("a", 5)
    q.add_after("a", 2)
    q.add_after("a", 9)
    clock.now += 1.9
    assert q.get(0) is None
    clock.now += 0.1
    assert q.get(0) == "a"
    q.done("a")
    clock.now += 10
    assert q.get(0) is None  # the later due times were folded into the first


def test_discard_drops_a_pending_retry() -> None:
    clock = Clock()
    q = queue(clock)
    q.add_rate_limited("gone")
    q.discard("gone")
    clock.now += 100
    assert q.get(0) is None
    assert q.failures("gone") == 0


def test_shutdown_releases_waiting_workers() -> None:
    q = queue(Clock())
    q.shutdown()
    assert q.get() is None


def test_metrics_have_controller_runtimes_names() -> None:
    clock = Clock()
    q = queue(clock)
    q.add("m")
    clock.now += 3
    q.get(0)
    q.add_rate_limited("m")
    labels = {"name": "unit", "controller": "unit"}
    assert REGISTRY.get_sample_value("workqueue_adds_total", labels) is not None
    assert REGISTRY.get_sample_value("workqueue_depth", labels) == 0
    assert REGISTRY.get_sample_value("workqueue_retries_total", labels) is not None
    assert REGISTRY.get_sample_value("workqueue_queue_duration_seconds_count", labels) is not None
    clock.now += 2
    assert REGISTRY.get_sample_value("workqueue_longest_running_processor_seconds", labels) == 2
    assert REGISTRY.get_sample_value("workqueue_unfinished_work_seconds", labels) == 2
    q.done("m")
    assert REGISTRY.get_sample_value("workqueue_work_duration_seconds_count", labels) is not None
