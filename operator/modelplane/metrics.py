"""The operator's own Prometheus metrics (every one in this module), served on the metrics port."""

from __future__ import annotations

import threading
from typing import Final

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES: Final = Counter(
    "modelplane_operator_reconciles", "Reconciles of ModelDeployments, by result.", ["result"]
)
RECONCILE_SECONDS: Final = Histogram(
    "modelplane_operator_reconcile_duration_seconds",
    "How long one reconcile of a ModelDeployment took.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
MODEL_DEPLOYMENTS: Final = Gauge(
    "modelplane_operator_modeldeployments",
    "ModelDeployments by the status of their Ready condition.",
    ["ready"],
)
DRIFT_CORRECTIONS: Final = Counter(
    "modelplane_operator_drift_corrections",
    "Children put back after someone deleted or edited them, by kind.",
    ["kind"],
)
CHILD_WRITES: Final = Counter(
    "modelplane_operator_child_writes", "Children applied or deleted, by kind and verb.", ["kind", "verb"]
)
EVENTS_DROPPED: Final = Counter(
    "modelplane_operator_events_dropped",
    "Events not posted because too many were waiting for the API server (events.CAPACITY).",
)
API_ERRORS: Final = Counter(
    "modelplane_operator_api_errors",
    "Kubernetes API calls that failed, by verb and HTTP status.",
    ["verb", "code"],
)

# The work queue's metrics under controller-runtime's names, so its dashboards and alerts apply as is.
_QUEUE_LABELS: Final = ["name", "controller"]
WORKQUEUE_DEPTH: Final = Gauge("workqueue_depth", "Current depth of the work queue.", _QUEUE_LABELS)
WORKQUEUE_ADDS: Final = Counter(
    "workqueue_adds", "Total number of adds handled by the work queue.", _QUEUE_LABELS
)
WORKQUEUE_RETRIES: Final = Counter(
    "workqueue_retries",
    "Total number of retries (rate-limited adds) handled by the work queue.",
    _QUEUE_LABELS,
)
_QUEUE_BUCKETS: Final = (0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1000)
WORKQUEUE_QUEUE_DURATION: Final = Histogram(
    "workqueue_queue_duration_seconds",
    "How long in seconds an item stays in the work queue before being requested.",
    _QUEUE_LABELS,
    buckets=_QUEUE_BUCKETS,
)
WORKQUEUE_WORK_DURATION: Final = Histogram(
    "workqueue_work_duration_seconds",
    "How long in seconds processing an item from the work queue takes.",
    _QUEUE_LABELS,
    buckets=_QUEUE_BUCKETS,
)
WORKQUEUE_UNFINISHED_WORK: Final = Gauge(
    "workqueue_unfinished_work_seconds",
    "How many seconds of work has been done that is in progress and hasn't been observed by work_duration.",
    _QUEUE_LABELS,
)
WORKQUEUE_LONGEST_RUNNING: Final = Gauge(
    "workqueue_longest_running_processor_seconds",
    "How many seconds has the longest running processor for the work queue been running.",
    _QUEUE_LABELS,
)

_ready_by_key: dict[tuple[str, str], str] = {}
_lock = threading.Lock()


def record_ready(namespace: str, name: str, ready: str | None) -> None:
    """Track each ModelDeployment's Ready status (None: it is gone) and refresh the gauge."""
    with _lock:
        if ready is None:
            _ready_by_key.pop((namespace, name), None)
        else:
            _ready_by_key[(namespace, name)] = ready
        counts = {"True": 0, "False": 0, "Unknown": 0}
        for value in _ready_by_key.values():
            counts[value if value in counts else "Unknown"] += 1
        for value, count in counts.items():
            MODEL_DEPLOYMENTS.labels(ready=value).set(count)


def serve(port: int) -> None:
    if port:
        start_http_server(port)
