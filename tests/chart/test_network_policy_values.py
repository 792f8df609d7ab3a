"""The chart's networkPolicy values reach the operator as the settings they say."""

from __future__ import annotations

from typing import Any

from modelplane.config import Config
from modelplane.render.settings import NetworkPolicySettings

from tests.chart.conftest import by_kind, documents
from tests.support.helm import CHART, Helm


def operator_env(helm: Helm, values: dict[str, Any] | None = None) -> dict[str, str]:
    (deployment,) = by_kind(documents(helm.template(values or {})), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {
        e["name"]: e["value"] for e in container["env"] if e["name"].startswith("MODELPLANE_NETWORK_POLICY")
    }


def test_the_charts_defaults_are_the_operators_defaults(helm: Helm) -> None:
    assert Config.from_env(operator_env(helm)).render.network_policy == NetworkPolicySettings()


def test_selectors_and_turning_it_off(helm: Helm) -> None:
    values = {
        "networkPolicy": {
            "gateway": {"namespaceSelector": "", "podSelector": "app=gw,tier=edge"},
            "prometheus": {"namespaceSelector": "kubernetes.io/metadata.name=monitoring"},
        }
    }
    assert Config.from_env(operator_env(helm, values)).render.network_policy == NetworkPolicySettings(
        gateway_pods={"app": "gw", "tier": "edge"},
        gateway_namespaces={},
        prometheus_namespaces={"kubernetes.io/metadata.name": "monitoring"},
    )
    bad = helm.run(
        "template", "mp", str(CHART), "--set", "networkPolicy.gateway.podSelector=envoy", check=False
    )
    assert bad.returncode != 0
    assert "at '/networkPolicy/gateway/podSelector'" in bad.stderr
    off = operator_env(helm, {"networkPolicy": {"enabled": False}})
    assert Config.from_env(off).render.network_policy is None
