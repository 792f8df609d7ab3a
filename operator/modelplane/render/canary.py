"""How replicas split between the stable and the canary track."""

from __future__ import annotations

import math

from modelplane import spec as specs


def canary_replicas(total: int, traffic_percent: int) -> int:
    """round(total x percent / 100), half up, and at least 1 when the percent is above 0."""
    if total == 0:
        return 0
    wanted = math.floor(total * traffic_percent / 100 + 0.5)
    return max(wanted, 1) if traffic_percent > 0 else 0


def split(md: specs.ModelDeployment, canary_ready: bool) -> tuple[int, int]:
    """(stable, canary) replicas. The stable track gives up pods only to a canary that is Ready."""
    total = md.autoscaling.min_replicas if md.autoscaling else md.replicas
    if md.canary is None:
        return total, 0
    canary = canary_replicas(total, md.canary.traffic_percent)
    return (total - canary if canary_ready else total), canary
