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
    # A reconcile that failed for a reason that passes is retried after retry_seconds, doubling per
    # failure up to retry_max_seconds (with jitter); a refusal only a change can fix is not retried.
    retry_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    # Every ModelDeployment is reconciled again this often even without an event: the safety net under
    # the watches (a missed event, a Secret that changed). 0 turns it off.
    resync_seconds: float = 600.0
    # The consumer Secrets' metadata (spec.access.consumers) is read again this often; a change
    # reconciles every ModelDeployment. 0 turns it off (then: at the resync).
    consumer_poll_seconds: float = 10.0
    workers: int = 4  # reconciles of different ModelDeployments run in parallel; one key never twice

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        defaults = RenderSettings()
        render = RenderSettings(
            runtime_image=env.get("MODELPLANE_RUNTIME_IMAGE", defaults.runtime_image),
            tensorflow_runtime_image=env.get("MODELPLANE_TENSORFLOW_RUNTIME_IMAGE", ""),
            vllm_image=env.get("MODELPLANE_VLLM_IMAGE") or defaults.vllm_image,
            requests=_quantities(env, "MODELPLANE_DEFAULT_REQUESTS", defaults.requests),
            limits=_quantities(env, "MODELPLANE_DEFAULT_LIMITS", defaults.limits),
            cluster_domain=env.get("MODELPLANE_CLUSTER_DOMAIN", defaults.cluster_domain),
            prometheus_url=env.get("MODELPLANE_PROMETHEUS_URL", defaults.prometheus_url),
            consumer_namespace=env.get("MODELPLANE_CONSUMER_NAMESPACE", defaults.consumer_namespace),
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
            retry_seconds=_float(env, "MODELPLANE_RETRY_SECONDS", cls.retry_seconds),
            retry_max_seconds=_float(env, "MODELPLANE_RETRY_MAX_SECONDS", cls.retry_max_seconds),
            resync_seconds=_float(env, "MODELPLANE_RESYNC_SECONDS", cls.resync_seconds),
            consumer_poll_seconds=_float(env, "MODELPLANE_CONSUMER_POLL_SECONDS", cls.consumer_poll_seconds),
            workers=max(1, _int(env, "MODELPLANE_WORKERS", cls.workers)),
        )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} must be an integer") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} must be a number of seconds") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative")
    return value


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
