"""What the renderers take from the operator's configuration (config.py builds it from the env)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RenderSettings:
    runtime_image: str = "modelplane/runtime:latest"
    requests: Mapping[str, str] = field(default_factory=lambda: {"cpu": "100m", "memory": "256Mi"})
    limits: Mapping[str, str] = field(default_factory=lambda: {"memory": "2Gi"})
    run_as_user: int = 65532
    cluster_domain: str = "cluster.local"
    prometheus_url: str = "http://prometheus.monitoring.svc:9090"
