"""Pure functions from a ModelDeployment to the manifests of its children: no I/O here.

``children`` is what the operator applies and what ``modelplane render`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelplane import spec as specs
from modelplane.consumers import Directory
from modelplane.render.autoscaling import horizontal_pod_autoscaler, scaled_object
from modelplane.render.cache import caches, fill_job, persistent_volume_claim
from modelplane.render.canary import canary_replicas, split
from modelplane.render.common import CANARY, SHADOW, STABLE, Manifest
from modelplane.render.deployment import deployment
from modelplane.render.disruption import pod_disruption_budget
from modelplane.render.network import network_policy
from modelplane.render.route import http_route
from modelplane.render.security_policy import security_policy
from modelplane.render.service import service, urls
from modelplane.render.settings import RenderSettings
from modelplane.render.traffic_policy import backend_traffic_policy


@dataclass(frozen=True)
class Observations:
    """What the renderers need to know of the cluster, observed by the caller."""

    canary_ready: bool = False
    secret_keys: frozenset[str] = frozenset()
    keda_installed: bool = False
    gateway_api_installed: bool = False  # the HTTPRoute CRD is established
    # spec.access: the consumer directory (None: not read) and whether Envoy Gateway's policy CRDs
    # are installed.
    consumers: Directory | None = None
    security_policy_installed: bool = False
    traffic_policy_installed: bool = False


def children(
    md: specs.ModelDeployment, settings: RenderSettings, observed: Observations = Observations()
) -> list[Manifest]:
    stable_replicas, canary_count = split(md, observed.canary_ready)
    autoscaler = _autoscaler(md, settings, observed)
    # An autoscaler owns the stable replica count; without KEDA a concurrency/rps model stays at its minimum.
    stable: int | None = stable_replicas
    if md.autoscaling is not None and autoscaler is not None:
        stable = None
    elif md.autoscaling is not None:
        stable = max(md.autoscaling.min_replicas, 1)
    manifests: list[Manifest] = []
    for name, model in caches(md):
        manifests.append(persistent_volume_claim(md, model, name))
        manifests.append(fill_job(md, model, name, settings, _keys(model, observed)))
    manifests += [
        deployment(md, md.model, STABLE, stable, settings, _keys(md.model, observed)),
        service(md),
    ]
    if md.strategy == "Canary":
        manifests.append(service(md, STABLE))
    if md.canary is not None:
        manifests.append(
            deployment(md, md.canary.model, CANARY, canary_count, settings, _keys(md.canary.model, observed))
        )
        manifests.append(service(md, CANARY))
    if autoscaler is not None:
        manifests.append(autoscaler)
    if md.shadow is not None:
        shadow_keys = _keys(md.shadow.model, observed)
        manifests.append(deployment(md, md.shadow.model, SHADOW, 1, settings, shadow_keys))
        manifests.append(service(md, SHADOW))
    if md.gateway is not None and observed.gateway_api_installed and _access_enforceable(md, observed):
        manifests.append(http_route(md, observed.canary_ready))
    if _most_replicas(md) > 1:
        manifests.append(pod_disruption_budget(md))
    if settings.network_policy is not None:
        manifests.append(network_policy(md, settings.network_policy))
    manifests.extend(_access_policies(md, settings, observed))
    traffic = _traffic_policy(md, observed)
    if traffic is not None:
        manifests.append(traffic)
    return manifests


def _access_enforceable(md: specs.ModelDeployment, observed: Observations) -> bool:
    """Whether the gateway can check what spec.access.consumers asks: else no route (closed, not open)."""
    if not md.consumers:
        return True
    return observed.security_policy_installed and (md.quota is None or observed.traffic_policy_installed)


def _access_policies(
    md: specs.ModelDeployment, settings: RenderSettings, observed: Observations
) -> list[Manifest]:
    """spec.access.consumers: the SecurityPolicy (keys, who may call); a quota is _traffic_policy's."""
    if not md.consumers or not observed.security_policy_installed:
        return []
    directory = observed.consumers or Directory(settings.consumer_namespace)
    return [security_policy(md, directory, directory.resolve(md.consumers).allowed)]


def _traffic_policy(md: specs.ModelDeployment, observed: Observations) -> Manifest | None:
    """The route's one BackendTrafficPolicy (Envoy Gateway takes one per route): spec.access.quota's
    rate limit, and what holds a request while a model scaled to zero starts a pod."""
    enforced = md.consumers and observed.security_policy_installed and observed.traffic_policy_installed
    quota = md.quota if enforced else None
    to_zero = can_scale_to_zero(md, observed)
    if quota is None and not to_zero:
        return None
    return backend_traffic_policy(md, quota, to_zero)


def _autoscaler(
    md: specs.ModelDeployment, settings: RenderSettings, observed: Observations
) -> Manifest | None:
    if md.autoscaling is None:
        return None
    if md.autoscaling.uses_keda:
        if not observed.keda_installed:
            return None
        return scaled_object(md, md.autoscaling, settings, to_zero=can_scale_to_zero(md, observed))
    return horizontal_pod_autoscaler(md, md.autoscaling)


def can_scale_to_zero(md: specs.ModelDeployment, observed: Observations) -> bool:
    """minReplicas 0 and the Gateway can hold a request while a pod starts (Envoy Gateway's
    BackendTrafficPolicy is there to say so); otherwise the model keeps one pod."""
    return (
        md.scales_to_zero
        and md.gateway is not None
        and observed.gateway_api_installed
        and observed.traffic_policy_installed
    )


def _keys(model: specs.Model, observed: Observations) -> frozenset[str]:
    return observed.secret_keys if model.credentials_secret else frozenset()


def _most_replicas(md: specs.ModelDeployment) -> int:
    return md.autoscaling.max_replicas if md.autoscaling else md.replicas


__all__ = [
    "Manifest",
    "Observations",
    "RenderSettings",
    "can_scale_to_zero",
    "canary_replicas",
    "children",
    "split",
    "urls",
]
