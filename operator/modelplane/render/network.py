"""The NetworkPolicy of every ModelDeployment: its pods (both tracks) accept traffic only from the
gateway's Envoy pods, from Prometheus, and from the namespaces and pods spec.access lists, or, without
spec.access, from the pods of the model's own namespace. Egress stays open (pulls need the model
store). Traffic from the pods' own node is always admitted, as the NetworkPolicy API defines (the
kubelet's probes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from modelplane import spec as specs
from modelplane.render.common import Manifest, metadata, selector, stamp
from modelplane.render.settings import NAMESPACE_NAME_LABEL, NetworkPolicySettings

# Without spec.access: every pod of the model's own namespace (a peer of a podSelector alone selects
# pods of the policy's namespace), so that an upgrade keeps the callers next to the model.
OWN_NAMESPACE: Final[dict[str, Any]] = {"podSelector": {}}


def network_policy(md: specs.ModelDeployment, settings: NetworkPolicySettings) -> Manifest:
    peers = [
        _peer(settings.gateway_namespaces, settings.gateway_pods),
        _peer(settings.prometheus_namespaces, settings.prometheus_pods),
        *(_access_peers(md.access) if md.access is not None else [dict(OWN_NAMESPACE)]),
    ]
    return stamp(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(md, md.name),
            "spec": {
                "podSelector": {"matchLabels": selector(md)},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": peers}],
            },
        }
    )


def _peer(namespaces: Mapping[str, str], pods: Mapping[str, str]) -> dict[str, Any]:
    return {"namespaceSelector": _match_labels(namespaces), "podSelector": _match_labels(pods)}


def _access_peers(access: specs.Access) -> list[dict[str, Any]]:
    pods = None if access.pod_selector is None else _label_selector(access.pod_selector)
    if not access.namespaces:
        # A peer of a podSelector alone selects pods of the policy's own namespace.
        return [] if pods is None else [{"podSelector": pods}]
    namespaces = {
        "matchExpressions": [
            {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": sorted(access.namespaces)}
        ]
    }
    peer: dict[str, Any] = {"namespaceSelector": namespaces}
    if pods is not None:
        peer["podSelector"] = pods
    return [peer]


def _match_labels(labels: Mapping[str, str]) -> dict[str, Any]:
    return {"matchLabels": dict(sorted(labels.items()))} if labels else {}


def _label_selector(selector_: specs.LabelSelector) -> dict[str, Any]:
    result = _match_labels(selector_.match_labels)
    if selector_.match_expressions:
        result["matchExpressions"] = [
            {"key": e.key, "operator": e.operator, **({"values": list(e.values)} if e.values else {})}
            for e in selector_.match_expressions
        ]
    return result
