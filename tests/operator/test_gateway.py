"""spec.gateway: the parser, the HTTPRoute's plan (CRD-optional, pruned when no longer named), and status
(the address from outside the cluster, the route's conditions in ours)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest
import yaml
from modelplane import children, plan, render, status
from modelplane import spec as specs

from tests.operator.test_plan import LATER, SECRETS, converged, desired, kinds, observed
from tests.operator.test_render import GOLDEN, SETTINGS
from tests.operator.test_spec import body as spec_body

GATEWAY_API = frozenset({children.HTTPROUTE_CRD})


def gateway(
    addresses: tuple[str, ...] = ("172.28.0.1",),
    listeners: tuple[tuple[str, str, int], ...] = (("http", "HTTP", 80), ("https", "HTTPS", 443)),
) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "modelplane", "namespace": "modelplane-system", "generation": 1},
        "spec": {
            "gatewayClassName": "modelplane",
            "listeners": [{"name": n, "protocol": p, "port": port} for n, p, port in listeners],
        },
        "status": {"addresses": [{"type": "IPAddress", "value": a} for a in addresses]},
    }


def route_status(route: Mapping[str, Any], accepted: str = "True", resolved: str = "True") -> dict[str, Any]:
    result: dict[str, Any] = copy.deepcopy(dict(route))
    generation = route["metadata"].get("generation", 1)
    result["status"] = {
        "parents": [
            {
                "parentRef": {"name": "modelplane", "namespace": "modelplane-system"},
                "controllerName": "gateway.envoyproxy.io/gatewayclass-controller",
                "conditions": [
                    {
                        "type": "Accepted",
                        "status": accepted,
                        "reason": "Accepted" if accepted == "True" else "NotAllowedByListeners",
                        "message": "Route is accepted" if accepted == "True" else "No listener allows it",
                        "observedGeneration": generation,
                    },
                    {
                        "type": "ResolvedRefs",
                        "status": resolved,
                        "reason": "ResolvedRefs" if resolved == "True" else "BackendNotFound",
                        "message": "Resolved all the Object references for the Route"
                        if resolved == "True"
                        else "Service ml/iris not found",
                        "observedGeneration": generation,
                    },
                ],
            }
        ]
    }
    return result


def with_route(seen: plan.Observed, route: dict[str, Any], **kwargs: Any) -> plan.Observed:
    others = [o for k, o in seen.children.items() if k[0] != "HTTPRoute"]
    return observed(*others, route, crds=seen.crds, secrets=seen.secrets, **kwargs)


# --- spec ------------------------------------------------------------------------------------------


def test_the_gateway_namespace_defaults_to_the_model_deployments() -> None:
    md = specs.parse(spec_body(gateway={"name": "public"}))
    assert md.gateway == specs.Gateway(name="public", namespace="ns")
    assert specs.gateway_ref(spec_body(gateway={"name": "public"})) == ("ns", "public")
    assert specs.parse(spec_body()).gateway is None
    assert specs.gateway_ref(spec_body()) is None


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"gateway": {}}, "spec.gateway.name"),
        ({"gateway": "modelplane"}, "spec.gateway"),
        ({"gateway": {"name": "Model_Plane"}}, "spec.gateway.name"),
        ({"gateway": {"name": "gw", "namespace": "a.b"}}, "spec.gateway.namespace"),
        ({"gateway": {"name": "gw", "sectionName": "HTTPS"}}, "spec.gateway.sectionName"),
        ({"gateway": {"name": "gw", "hostname": "*.models.example"}}, "spec.gateway.hostname"),
        ({"gateway": {"name": "gw", "hostname": 7}}, "spec.gateway.hostname"),
    ],
)
def test_gateway_errors_name_the_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(specs.SpecError, match=named.replace(".", r"\.")):
        specs.parse(spec_body(**fields))


# --- plan ------------------------------------------------------------------------------------------


def test_without_gateway_api_there_is_no_route_and_a_condition_says_why() -> None:
    want = desired("gateway-prefix")
    seen, written = converged(want, secrets=SECRETS["sklearn-s3"], gateway=gateway())
    assert "HTTPRoute" not in {kind for kind, _ in seen.children}
    ready, degraded = status.condition(written, "Ready"), status.condition(written, "Degraded")
    assert ready is not None
    assert degraded is not None
    assert (ready["status"], ready["reason"]) == ("False", "GatewayAPINotInstalled")
    assert (degraded["status"], degraded["reason"]) == ("True", "GatewayAPINotInstalled")
    assert "install Gateway API" in ready["message"]
    assert written["url"] == "http://iris.ml.svc.cluster.local"  # the in-cluster one, which works


def test_a_named_gateway_that_does_not_exist_is_reported() -> None:
    want = desired("gateway-prefix")
    _, written = converged(want, crds=GATEWAY_API, secrets=SECRETS["sklearn-s3"])
    ready = status.condition(written, "Ready")
    assert ready is not None
    assert ready["reason"] == "GatewayNotFound"
    assert "modelplane-system/modelplane" in ready["message"]


def test_an_accepted_route_makes_the_url_the_gateways_address() -> None:
    want = desired("gateway-prefix")
    seen, written = converged(want, crds=GATEWAY_API, secrets=SECRETS["sklearn-s3"], gateway=gateway())
    route = seen.children[("HTTPRoute", "iris")]
    pending = status.condition(written, "Ready")
    assert pending is not None
    assert pending["reason"] == "RoutePending"
    accepted = with_route(seen, route_status(route), gateway=gateway())
    result = plan.plan(want, accepted, written, LATER)
    assert result.apply == ()
    assert result.status is not None
    ready = status.condition(result.status, "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("True", "AllReplicasReady")
    # The HTTPS listener is the one handed out; the prefix is the namespace and the name.
    assert result.status["url"] == "https://172.28.0.1/ml/iris"
    assert result.status["grpcUrl"] == "172.28.0.1:443"
    assert result.status["serviceUrl"] == "http://iris.ml.svc.cluster.local"
    # Steady: nothing more to write.
    assert plan.plan(want, accepted, {**written, **result.status}, LATER).status is None


@pytest.mark.parametrize(
    ("accepted", "resolved", "reason", "message"),
    [
        ("False", "True", "RouteNotAccepted", "No listener allows it"),
        ("True", "False", "RouteRefsNotResolved", "Service ml/iris not found"),
    ],
)
def test_a_refused_route_is_not_ready_with_the_gateways_message(
    accepted: str, resolved: str, reason: str, message: str
) -> None:
    want = desired("gateway-prefix")
    seen, written = converged(want, crds=GATEWAY_API, secrets=SECRETS["sklearn-s3"], gateway=gateway())
    route = route_status(seen.children[("HTTPRoute", "iris")], accepted, resolved)
    result = plan.plan(want, with_route(seen, route, gateway=gateway()), written, LATER)
    assert result.status is not None
    ready, degraded = status.condition(result.status, "Ready"), status.condition(result.status, "Degraded")
    assert ready is not None
    assert degraded is not None
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert message in ready["message"]
    assert (degraded["status"], degraded["reason"]) == ("True", reason)
    assert result.events
    assert result.events[0].reason == reason


def test_a_route_status_of_an_older_generation_is_still_pending() -> None:
    want = desired("gateway-prefix")
    seen, written = converged(want, crds=GATEWAY_API, secrets=SECRETS["sklearn-s3"], gateway=gateway())
    route = route_status(seen.children[("HTTPRoute", "iris")])
    route["metadata"]["generation"] = 2
    result = plan.plan(want, with_route(seen, route, gateway=gateway()), written, LATER)
    assert result.status is None or status.condition(result.status, "Ready")["reason"] == "RoutePending"  # type: ignore[index]


@pytest.mark.parametrize(
    ("listeners", "gateway_spec", "url", "grpc"),
    [
        ((("web", "HTTP", 8080),), {}, "http://172.28.0.1:8080/ml/iris", "172.28.0.1:8080"),
        (
            (("http", "HTTP", 80), ("https", "HTTPS", 8443)),
            {"sectionName": "http"},
            "http://172.28.0.1/ml/iris",
            "172.28.0.1:80",
        ),
        (
            (("http", "HTTP", 80), ("https", "HTTPS", 443)),
            {"hostname": "iris.models.example"},
            "https://iris.models.example",
            "iris.models.example:443",
        ),
    ],
)
def test_the_url_follows_the_listener_and_the_hostname(
    listeners: tuple[tuple[str, str, int], ...], gateway_spec: dict[str, Any], url: str, grpc: str
) -> None:
    want = desired(
        "gateway-prefix", gateway={"name": "modelplane", "namespace": "modelplane-system", **gateway_spec}
    )
    gw = gateway(listeners=listeners)
    seen, written = converged(want, crds=GATEWAY_API, secrets=SECRETS["sklearn-s3"], gateway=gw)
    result = plan.plan(
        want, with_route(seen, route_status(seen.children[("HTTPRoute", "iris")]), gateway=gw), written, LATER
    )
    assert result.status is not None
    assert (result.status["url"], result.status["grpcUrl"]) == (url, grpc)


def test_a_gateway_without_an_address_is_not_ready_yet() -> None:
    want = desired("gateway-prefix")
    gw = gateway(addresses=())
    seen, written = converged(want, crds=GATEWAY_API, secrets=SECRETS["sklearn-s3"], gateway=gw)
    result = plan.plan(
        want, with_route(seen, route_status(seen.children[("HTTPRoute", "iris")]), gateway=gw), written, LATER
    )
    assert result.status is not None
    ready = status.condition(result.status, "Ready")
    assert ready is not None
    assert ready["reason"] == "GatewayNotReady"
    assert result.status["url"] == "http://iris.ml.svc.cluster.local"


def test_removing_the_gateway_prunes_the_route_and_the_url_goes_back() -> None:
    want = desired("gateway-prefix")
    seen, written = converged(want, crds=GATEWAY_API, secrets=SECRETS["sklearn-s3"], gateway=gateway())
    assert ("HTTPRoute", "iris") in kinds(tuple(seen.children.values()))
    without = desired("gateway-prefix", gateway=None)
    result = plan.plan(without, seen, written, LATER)
    assert {(r.kind, r.name) for r in result.prune} == {("HTTPRoute", "iris")}
    # The gRPC port no longer says h2c: the Service is applied again, as it is without a Gateway.
    assert kinds(result.apply) == [("Service", "iris")]
    assert "appProtocol" not in str(result.apply[0]["spec"]["ports"])


def test_a_model_deployment_without_a_gateway_renders_no_route_even_with_gateway_api() -> None:
    want = desired()
    seen, written = converged(want, crds=GATEWAY_API, secrets=SECRETS["sklearn-s3"], gateway=gateway())
    assert "HTTPRoute" not in {kind for kind, _ in seen.children}
    assert "serviceUrl" not in written
    ready = status.condition(written, "Ready")
    assert ready is not None
    assert ready["status"] == "True"


@pytest.mark.parametrize(("canary_ready", "weights"), [(False, [100, 0]), (True, [80, 20])])
def test_a_canary_gets_its_percent_by_route_weight_once_ready(canary_ready: bool, weights: list[int]) -> None:
    md = specs.parse(yaml.safe_load((GOLDEN / "gateway-canary.input.yaml").read_text()))
    route = render.children(
        md, SETTINGS, render.Observations(canary_ready=canary_ready, gateway_api_installed=True)
    )
    (rule,) = next(m for m in route if m["kind"] == "HTTPRoute")["spec"]["rules"]
    assert [(b["name"], b["weight"]) for b in rule["backendRefs"]] == list(
        zip(["iris-stable", "iris-canary"], weights, strict=True)
    )


# --- shadow ----------------------------------------------------------------------------------------

SHADOW_MODEL = {"uri": "s3://b/shadow", "format": "sklearn"}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"gateway": {"name": "gw"}, "rollout": {"shadow": {"percent": 50}}}, "spec.rollout.shadow.model"),
        (
            {"gateway": {"name": "gw"}, "rollout": {"shadow": {"percent": 101, "model": SHADOW_MODEL}}},
            "spec.rollout.shadow.percent",
        ),
        (
            {"gateway": {"name": "gw"}, "rollout": {"shadow": {"percent": 0, "model": SHADOW_MODEL}}},
            "spec.rollout.shadow.percent",
        ),
        ({"rollout": {"shadow": {"model": SHADOW_MODEL}}}, "spec.rollout.shadow needs spec.gateway"),
        (
            {
                "gateway": {"name": "gw"},
                "rollout": {"shadow": {"model": {"uri": "s3://b/x", "format": "gguf"}}},
            },
            "spec.rollout.shadow.model",
        ),
    ],
)
def test_shadow_errors_name_the_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(specs.SpecError, match=named.replace(".", r"\.")):
        specs.parse(spec_body(**fields))


def test_a_shadow_has_pods_outside_the_models_service_and_its_own_status() -> None:
    want = desired("gateway-shadow")
    seen, written = converged(want, crds=GATEWAY_API, gateway=gateway())
    service = seen.children[("Service", "iris")]
    shadow = seen.children[("Deployment", "iris-shadow")]
    pod_labels = shadow["spec"]["template"]["metadata"]["labels"]
    assert not all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert (
        seen.children[("Service", "iris-shadow")]["spec"]["selector"]
        == shadow["spec"]["selector"]["matchLabels"]
    )
    assert written["shadow"]["uri"] == "s3://models/iris/v2.joblib"
    assert written["shadow"]["readyReplicas"] == 1
    # The live track's counts leave the shadow out.
    assert written["desiredReplicas"] == 1


def test_removing_the_shadow_prunes_it_and_its_mirror() -> None:
    want = desired("gateway-shadow")
    seen, written = converged(want, crds=GATEWAY_API, gateway=gateway())
    without = desired("gateway-shadow", rollout=None)
    result = plan.plan(without, seen, written, LATER)
    assert {(r.kind, r.name) for r in result.prune} == {
        ("Deployment", "iris-shadow"),
        ("Service", "iris-shadow"),
    }
    assert kinds(result.apply) == [("HTTPRoute", "iris")]
    assert "RequestMirror" not in str(result.apply[0])
