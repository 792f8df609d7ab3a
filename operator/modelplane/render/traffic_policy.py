"""Envoy Gateway's BackendTrafficPolicy for a ModelDeployment's route: the one policy of its kind for
the route (Envoy Gateway applies one BackendTrafficPolicy per target), so everything the route needs
from it is rendered here, together: spec.access.quota's rate limit (render/rate_limit.py) and what
scale to zero needs.

Scale to zero (spec.autoscaling.minReplicas 0) is what makes a request that arrives while no pod runs
wait for one instead of failing:

- ``routingType: Service``: Envoy connects to the Service's cluster IP, not to the pods' endpoints. With
  no pod, kube-proxy refuses the connection, which Envoy can retry; with endpoint routing Envoy would
  have no endpoint at all and answer 503 at once, without a retry.
- retries on connect-failure (and on a reset before the request went out, or a refused HTTP/2
  stream: a pod that is ending), with a jittered backoff of at most RETRY_MAX_INTERVAL, as many as
  cover the cold start; the route's timeout (render/route.py) bounds them all.
- ``circuitBreaker.maxParallelRetries``: Envoy's own default of 3 retries in flight per cluster would
  refuse the fourth client waiting for a pod (Envoy Gateway 1.9.1 raises it to 1024 when the policy
  says nothing; rendered here so the value does not depend on that).

KEDA (render/autoscaling.py) scales 0 -> 1 on the route's Envoy metrics, which count these retries.
"""

from __future__ import annotations

import math
from typing import Any, Final

from modelplane import spec as specs
from modelplane.render.common import Manifest, metadata, stamp
from modelplane.render.rate_limit import rate_limit
from modelplane.render.security_policy import API_VERSION, route_target

RETRY_BASE_INTERVAL: Final = "250ms"
RETRY_MAX_INTERVAL_SECONDS: Final = 1
# Envoy waits a random time up to the (capped) backoff between retries: about half of the maximum on
# average once capped. Four retries per second of cold start is twice what that needs.
RETRIES_PER_SECOND: Final = 4
RETRY_TRIGGERS: Final = ("connect-failure", "reset-before-request", "refused-stream")
MAX_PARALLEL_RETRIES: Final = 1024  # as many as Envoy's default for pending and parallel requests


def backend_traffic_policy(md: specs.ModelDeployment, quota: specs.Quota | None, to_zero: bool) -> Manifest:
    """QUOTA: spec.access.quota, enforced (None: no rate limit); TO_ZERO: hold requests at zero pods."""
    spec: dict[str, Any] = {"targetRefs": route_target(md)}
    if quota is not None:
        spec.update(rate_limit(quota))
    if to_zero:
        spec.update(_wake_from_zero(md))
    return stamp(
        {
            "apiVersion": API_VERSION,
            "kind": "BackendTrafficPolicy",
            "metadata": metadata(md, md.name),
            "spec": spec,
        }
    )


def _wake_from_zero(md: specs.ModelDeployment) -> dict[str, Any]:
    assert md.autoscaling is not None
    retries = math.ceil(md.autoscaling.cold_start_timeout_seconds * RETRIES_PER_SECOND)
    return {
        "routingType": "Service",
        "retry": {
            "numRetries": retries,
            "retryOn": {"triggers": list(RETRY_TRIGGERS)},
            "perRetry": {
                "backOff": {
                    "baseInterval": RETRY_BASE_INTERVAL,
                    "maxInterval": f"{RETRY_MAX_INTERVAL_SECONDS}s",
                }
            },
        },
        "circuitBreaker": {"maxParallelRetries": MAX_PARALLEL_RETRIES},
    }


__all__ = ["backend_traffic_policy"]
