"""Every ModelDeployment's NetworkPolicy: whom it admits with and without spec.access, turned off, errors."""

from __future__ import annotations

import re
from typing import Any

import pytest
from modelplane import render, spec
from modelplane.config import Config, ConfigError
from modelplane.render.settings import NetworkPolicySettings


def body(**spec_fields: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"model": {"uri": "s3://b/k", "format": "sklearn"}, **spec_fields},
    }


DEFAULTS = render.RenderSettings()


def policies(settings: render.RenderSettings = DEFAULTS, **spec_fields: Any) -> list[dict[str, Any]]:
    manifests = render.children(spec.parse(body(**spec_fields)), settings)
    return [m for m in manifests if m["kind"] == "NetworkPolicy"]


def peers(**spec_fields: Any) -> list[dict[str, Any]]:
    (policy,) = policies(**spec_fields)
    (rule,) = policy["spec"]["ingress"]
    result: list[dict[str, Any]] = rule["from"]
    return result


GATEWAY = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "envoy-gateway-system"}},
    "podSelector": {
        "matchLabels": {
            "app.kubernetes.io/component": "proxy",
            "app.kubernetes.io/managed-by": "envoy-gateway",
            "app.kubernetes.io/name": "envoy",
        }
    },
}
PROMETHEUS = {
    "namespaceSelector": {},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}


def test_without_access_the_models_own_namespace_is_admitted_besides_the_gateway_and_prometheus() -> None:
    assert peers() == [GATEWAY, PROMETHEUS, {"podSelector": {}}]


def test_the_policy_selects_both_tracks_and_leaves_egress_open() -> None:
    (policy,) = policies()
    assert policy["metadata"]["name"] == "m"
    assert policy["spec"]["podSelector"] == {"matchLabels": {"modelplane.io/name": "m"}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]


def test_access_replaces_the_own_namespace_so_empty_access_admits_only_the_gateway_and_prometheus() -> None:
    assert peers(access={}) == [GATEWAY, PROMETHEUS]


def test_listed_namespaces_are_admitted_whole() -> None:
    assert peers(access={"namespaces": ["team-b", "apps"]})[2:] == [
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["apps", "team-b"]}
                ]
            }
        }
    ]


def test_a_pod_selector_alone_admits_those_pods_of_the_models_own_namespace() -> None:
    assert peers(access={"podSelector": {"matchLabels": {"app": "web"}}})[2:] == [
        {"podSelector": {"matchLabels": {"app": "web"}}}
    ]


def test_a_pod_selector_narrows_the_listed_namespaces() -> None:
    selector = {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}
    (peer,) = peers(access={"namespaces": ["team-b"], "podSelector": selector})[2:]
    assert peer["podSelector"] == selector
    assert peer["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-b"]


GATEWAY_REF = {"name": "modelplane", "namespace": "modelplane-system"}


def test_consumers_alone_admit_only_the_gateway_and_prometheus_so_no_pod_skips_the_key_check() -> None:
    assert peers(gateway=GATEWAY_REF, access={"consumers": ["alice"]}) == [GATEWAY, PROMETHEUS]


def test_consumers_and_namespaces_in_one_access() -> None:
    access = {"consumers": ["alice"], "quota": {"requests": 5}, "namespaces": ["team-b"]}
    parsed = spec.parse(body(gateway=GATEWAY_REF, access=access)).access
    assert parsed == spec.Access(consumers=("alice",), quota=spec.Quota(requests=5), namespaces=("team-b",))
    (peer,) = peers(gateway=GATEWAY_REF, access=access)[2:]
    assert peer["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-b"]


def test_the_gateway_and_prometheus_selectors_are_settings() -> None:
    settings = render.RenderSettings(
        network_policy=NetworkPolicySettings(
            gateway_pods={"app": "gw"},
            gateway_namespaces={},
            prometheus_pods={"app": "prom"},
            prometheus_namespaces={"kubernetes.io/metadata.name": "monitoring"},
        )
    )
    (policy,) = policies(settings, access={})
    assert policy["spec"]["ingress"][0]["from"] == [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "gw"}}},
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app": "prom"}},
        },
    ]


def test_turned_off_no_model_gets_a_policy() -> None:
    assert policies(render.RenderSettings(network_policy=None)) == []
    assert policies(render.RenderSettings(network_policy=None), access={"namespaces": ["a"]}) == []


def test_settings_from_env() -> None:
    assert Config.from_env({}).render.network_policy == NetworkPolicySettings()
    assert Config.from_env({"MODELPLANE_NETWORK_POLICY": "false"}).render.network_policy is None
    settings = Config.from_env(
        {
            "MODELPLANE_NETWORK_POLICY": "true",
            "MODELPLANE_NETWORK_POLICY_GATEWAY_PODS": "app=gw,tier=edge",
            "MODELPLANE_NETWORK_POLICY_GATEWAY_NAMESPACES": "",
            "MODELPLANE_NETWORK_POLICY_PROMETHEUS_NAMESPACES": "kubernetes.io/metadata.name=monitoring",
        }
    ).render.network_policy
    assert settings == NetworkPolicySettings(
        gateway_pods={"app": "gw", "tier": "edge"},
        gateway_namespaces={},
        prometheus_namespaces={"kubernetes.io/metadata.name": "monitoring"},
    )
    with pytest.raises(ConfigError, match="MODELPLANE_NETWORK_POLICY="):
        Config.from_env({"MODELPLANE_NETWORK_POLICY": "yes"})
    with pytest.raises(ConfigError, match="MODELPLANE_NETWORK_POLICY_GATEWAY_PODS"):
        Config.from_env({"MODELPLANE_NETWORK_POLICY_GATEWAY_PODS": "envoy"})


@pytest.mark.parametrize(
    ("access", "named"),
    [
        ("team-b", "spec.access"),
        ({"namespaces": "team-b"}, "spec.access.namespaces"),
        ({"namespaces": ["Team_B"]}, "spec.access.namespaces[0]"),
        ({"namespaces": ["a", "a"]}, "spec.access.namespaces"),
        ({"namespaces": [f"n{i}" for i in range(65)]}, "spec.access.namespaces"),
        ({"podSelector": {"matchLabels": {"app": 1}}}, "spec.access.podSelector.matchLabels"),
        (
            {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}},
            "spec.access.podSelector.matchExpressions[0].operator",
        ),
        (
            {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
            "spec.access.podSelector.matchExpressions[0].values",
        ),
        (
            {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}},
            "spec.access.podSelector.matchExpressions[0].values",
        ),
        (
            {"podSelector": {"matchExpressions": [{"operator": "Exists"}]}},
            "spec.access.podSelector.matchExpressions[0].key",
        ),
    ],
)
def test_errors_name_the_field(access: Any, named: str) -> None:
    with pytest.raises(spec.SpecError, match=re.escape(named)):
        spec.parse(body(access=access))
