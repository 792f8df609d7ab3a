"""The operator's configuration, from the environment (the chart and `make operator-up` set it)."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from modelplane.render import RenderSettings


class ConfigError(ValueError):
    """A variable with a value the operator cannot use; the message names the variable."""


@dataclass(frozen=True)
class Config:
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    field_manager: str = "modelplane"
    render: RenderSettings = field(default_factory=RenderSettings)
    metrics_port: int = 8080  # 0 disables the metrics endpoint
    health_port: int = 8081  # kopf's liveness endpoint, /healthz
    peering_name: str = "modelplane"  # "" runs standalone
    # The live peer with the highest priority reconciles; the others wait. Unset: random, so that
    # replicas of one Deployment differ (kopf pauses every peer when two share a priority).
    peering_priority: int = 0
    retry_seconds: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        defaults = RenderSettings()
        render = RenderSettings(
            runtime_image=env.get("MODELPLANE_RUNTIME_IMAGE", defaults.runtime_image),
            requests=_quantities(env, "MODELPLANE_DEFAULT_REQUESTS", defaults.requests),
            limits=_quantities(env, "MODELPLANE_DEFAULT_LIMITS", defaults.limits),
            cluster_domain=env.get("MODELPLANE_CLUSTER_DOMAIN", defaults.cluster_domain),
            prometheus_url=env.get("MODELPLANE_PROMETHEUS_URL", defaults.prometheus_url),
        )
        namespaces = tuple(
            ns.strip() for ns in env.get("MODELPLANE_WATCH_NAMESPACES", "").split(",") if ns.strip()
        )
        return cls(
            namespaces=namespaces,
            field_manager=env.get("MODELPLANE_FIELD_MANAGER", cls.field_manager) or cls.field_manager,
            render=render,
            metrics_port=_int(env, "MODELPLANE_METRICS_PORT", cls.metrics_port),
            health_port=_int(env, "MODELPLANE_HEALTH_PORT", cls.health_port),
            peering_name=env.get("MODELPLANE_PEERING_NAME", cls.peering_name),
            peering_priority=_int(env, "MODELPLANE_PEERING_PRIORITY", random.randint(1, 1_000_000)),
            retry_seconds=float(_int(env, "MODELPLANE_RETRY_SECONDS", int(cls.retry_seconds))),
        )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} must be an integer") from None


def _quantities(env: Mapping[str, str], name: str, default: Mapping[str, str]) -> Mapping[str, str]:
    """cpu=100m,memory=256Mi -> {"cpu": "100m", "memory": "256Mi"}; "" means none."""
    raw = env.get(name)
    if raw is None:
        return default
    result = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{name}={raw!r} must look like cpu=100m,memory=256Mi")
        result[key] = value
    return result
