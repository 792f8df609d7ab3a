"""Pure functions from a ModelDeployment to the manifests of its children: no I/O here.

``children`` is what the operator applies and what ``modelplane render`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelplane import spec as specs
from modelplane.render.autoscaling import horizontal_pod_autoscaler, scaled_object
from modelplane.render.cache import caches, fill_job, persistent_volume_claim
from modelplane.render.canary import canary_replicas, split
from modelplane.render.common import CANARY, SHADOW, STABLE, Manifest
from modelplane.render.deployment import deployment
from modelplane.render.disruption import pod_disruption_budget
from modelplane.render.route import http_route
from modelplane.render.service import service, urls
from modelplane.render.settings import RenderSettings


@dataclass(frozen=True)
class Observations:
    """What the renderers need to know of the cluster, observed by the caller."""

    canary_ready: bool = False
    secret_keys: frozenset[str] = frozenset()
    keda_installed: bool = False
    gateway_api_installed: bool = False  # the HTTPRoute CRD is established


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
    if md.gateway is not None and observed.gateway_api_installed:
        manifests.append(http_route(md, observed.canary_ready))
    if _most_replicas(md) > 1:
        manifests.append(pod_disruption_budget(md))
    return manifests


def _autoscaler(
    md: specs.ModelDeployment, settings: RenderSettings, observed: Observations
) -> Manifest | None:
    if md.autoscaling is None:
        return None
    if md.autoscaling.uses_keda:
        return scaled_object(md, md.autoscaling, settings) if observed.keda_installed else None
    return horizontal_pod_autoscaler(md, md.autoscaling)


def _keys(model: specs.Model, observed: Observations) -> frozenset[str]:
    return observed.secret_keys if model.credentials_secret else frozenset()


def _most_replicas(md: specs.ModelDeployment) -> int:
    return md.autoscaling.max_replicas if md.autoscaling else md.replicas


__all__ = ["Manifest", "Observations", "RenderSettings", "canary_replicas", "children", "split", "urls"]
