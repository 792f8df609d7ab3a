"""Autoscalers: an autoscaling/v2 HPA for cpu/memory, a KEDA ScaledObject for the other metrics."""

from __future__ import annotations

from typing import Any, Final

import modelplane_contract as contract

from modelplane import spec as specs
from modelplane.render.common import STABLE, Manifest, metadata, stamp, track_name
from modelplane.render.settings import RenderSettings


def scale_down_behavior(autoscaling: specs.Autoscaling) -> Manifest:
    """The HPA's scale-down stabilization: pods go only once the metric has stayed low this long."""
    return {"scaleDown": {"stabilizationWindowSeconds": autoscaling.scale_down_delay_seconds}}


def horizontal_pod_autoscaler(md: specs.ModelDeployment, autoscaling: specs.Autoscaling) -> Manifest:
    resource = "cpu" if autoscaling.metric == "cpu" else "memory"
    return stamp(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": metadata(md, md.name, STABLE),
            "spec": {
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": track_name(md, STABLE),
                },
                "minReplicas": autoscaling.min_replicas,
                "maxReplicas": autoscaling.max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": resource,
                            "target": {"type": "Utilization", "averageUtilization": autoscaling.target},
                        },
                    }
                ],
                "behavior": scale_down_behavior(autoscaling),
            },
        }
    )


def prometheus_query(md: specs.ModelDeployment, metric: str) -> str:
    """The model's total of METRIC over its pods; KEDA's HPA divides it by the target per pod."""
    if metric in specs.LLM_AUTOSCALING_METRICS:
        # The engine's gauges under vLLM's names and label, so either engine scales the same way.
        where = f'namespace="{md.namespace}",model_name="{md.served_name}"'
        if metric == "waitingRequests":
            return f"sum({contract.METRIC_LLM_WAITING}{{{where}}})"
        return f"100 * sum({contract.METRIC_LLM_KV_USAGE}{{{where}}})"  # the target is in percent
    where = f'namespace="{md.namespace}",model="{md.served_name}"'
    if metric == "concurrency":
        return f"sum({contract.METRIC_IN_FLIGHT}{{{where}}})"
    return f"sum(rate({contract.METRIC_REQUESTS_TOTAL}{{{where}}}[1m]))"


# With minReplicas 0, how often KEDA asks whether a model at zero has a request waiting (its default,
# 30 s, would add up to 30 s to every cold start).
WAKE_POLLING_SECONDS: Final = 5


def route_activity_query(md: specs.ModelDeployment) -> str:
    """Requests reaching the model's route in Envoy, and Envoy's retries of a request held while no pod
    runs (each failed connection is retried: render/traffic_policy.py), per second over the last
    minute, capped at 1: a trigger that wakes the model and keeps one pod, never more (the runtime's
    own metric scales further). Envoy Gateway names the route's clusters httproute/NS/NAME/rule/N; the
    Envoy pods' metrics must reach the same Prometheus (Envoy Gateway annotates them for scraping).
    The two counters are summed apart (their rates have the same labels) and each is 0 without series."""
    where = f'{{envoy_cluster_name=~"httproute/{md.namespace}/{md.name}/rule/[0-9]+"}}'
    terms = [
        f"(sum(rate(envoy_cluster_upstream_rq_{counter}{where}[1m])) or vector(0))"
        for counter in ("total", "retry")
    ]
    return f"clamp_max({' + '.join(terms)}, 1)"


def scaled_object(
    md: specs.ModelDeployment,
    autoscaling: specs.Autoscaling,
    settings: RenderSettings,
    to_zero: bool = False,
) -> Manifest:
    """KEDA scales on the runtime's own metrics, as Prometheus scraped them from the pods. TO_ZERO
    (minReplicas 0, and the Gateway can hold a request): KEDA also watches the route's requests in
    Envoy, which still arrive at zero pods, activates (0 -> 1) on the first, and scales to zero once
    no trigger has seen anything for scaleDownDelaySeconds."""
    triggers: list[dict[str, Any]] = [
        {
            "type": "prometheus",
            "metadata": {
                "serverAddress": settings.prometheus_url,
                "query": prometheus_query(md, autoscaling.metric),
                "threshold": str(autoscaling.target),
            },
        }
    ]
    timing: dict[str, Any] = {}
    if to_zero:
        triggers.append(
            {
                "type": "prometheus",
                "name": "gateway-requests",
                "metadata": {
                    "serverAddress": settings.prometheus_url,
                    "query": route_activity_query(md),
                    "threshold": "1",
                    "activationThreshold": "0",
                },
            }
        )
        timing["pollingInterval"] = WAKE_POLLING_SECONDS
    return stamp(
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": metadata(md, md.name, STABLE),
            "spec": {
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": track_name(md, STABLE),
                },
                **timing,
                "minReplicaCount": 0 if to_zero else max(autoscaling.min_replicas, 1),
                "maxReplicaCount": autoscaling.max_replicas,
                # cooldownPeriod only delays the last step to zero; N -> 1 is the HPA KEDA creates.
                "cooldownPeriod": autoscaling.scale_down_delay_seconds,
                "advanced": {"horizontalPodAutoscalerConfig": {"behavior": scale_down_behavior(autoscaling)}},
                "triggers": triggers,
            },
        }
    )
