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
API_ERRORS: Final = Counter(
    "modelplane_operator_api_errors",
    "Kubernetes API calls that failed, by verb and HTTP status.",
    ["verb", "code"],
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
