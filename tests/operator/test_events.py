"""The event recorder: a reconcile hands its Events over and goes on; they are posted in order, a
failing post does not stop the next, and a full queue drops (and counts) rather than block."""

from __future__ import annotations

import threading

import pytest
from kubernetes.client.exceptions import ApiException
from modelplane.events import EventRecorder
from modelplane.kube import KubeError
from prometheus_client import REGISTRY


def _dropped() -> float:
    return REGISTRY.get_sample_value("modelplane_operator_events_dropped_total") or 0.0


def test_events_are_posted_in_order_by_the_recorders_thread_and_a_failed_one_does_not_stop_the_rest() -> None:
    posted: list[tuple[str, str, str]] = []
    threads: set[str] = set()
    all_in = threading.Event()

    def post(namespace: str, name: str, uid: str, warning: bool, reason: str, message: str) -> None:
        threads.add(threading.current_thread().name)
        if reason == "Refused":
            raise KubeError("create", "Event", ApiException(status=403, reason="Forbidden"))
        posted.append((f"{namespace}/{name}", reason, message))
        if len(posted) == 3:
            all_in.set()

    recorder = EventRecorder(post)
    recorder.start()
    for number, reason in enumerate(["RolloutInProgress", "Refused", "AllReplicasReady", "Updated"]):
        recorder("ns", "iris", "uid-1", False, reason, f"message {number}")
    assert all_in.wait(10)
    recorder.stop()
    assert posted == [
        ("ns/iris", "RolloutInProgress", "message 0"),
        ("ns/iris", "AllReplicasReady", "message 2"),
        ("ns/iris", "Updated", "message 3"),
    ]
    assert threads == {"events"}  # never the caller's thread


def test_a_full_queue_drops_new_events_and_counts_them_without_blocking_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    first_taken = threading.Event()
    posted: list[str] = []

    def post(namespace: str, name: str, uid: str, warning: bool, reason: str, message: str) -> None:
        first_taken.set()
        release.wait(10)  # the API server is far behind
        posted.append(reason)

    recorder = EventRecorder(post, capacity=2)
    recorder.start()
    recorder("ns", "iris", "u", False, "first", "")
    assert first_taken.wait(10)  # the thread holds "first"; the queue is empty again
    before = _dropped()
    for reason in ["second", "third", "fourth", "fifth"]:
        recorder("ns", "iris", "u", False, reason, "")
    assert _dropped() - before == 2
    said = [r for r in caplog.records if "dropping new ones" in r.getMessage()]
    assert len(said) == 1  # once per run of drops, not once per Event
    release.set()
    recorder.stop()
    assert posted == ["first", "second", "third"]
