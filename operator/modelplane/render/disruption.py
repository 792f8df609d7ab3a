"""The PodDisruptionBudget: a drain takes at most one model pod at a time."""

from __future__ import annotations

from modelplane import spec as specs
from modelplane.render.common import STABLE, Manifest, metadata, selector, stamp


def pod_disruption_budget(md: specs.ModelDeployment) -> Manifest:
    return stamp(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": metadata(md, md.name, STABLE),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(md, STABLE)}},
        }
    )
