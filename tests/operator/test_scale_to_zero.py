"""Scale to zero through the Gateway (spec.autoscaling.minReplicas 0): the parser and the CRD's rules
that refuse it without what wakes a model up, the children that hold a request while a pod starts
(BackendTrafficPolicy, the route's timeout, the ScaledObject's trigger on Envoy's route metrics), and
status at zero pods."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
import yaml
from modelplane import children, plan, render, status
from modelplane import spec as specs
from modelplane.render.autoscaling import route_activity_query

from tests.operator.test_gateway import gateway, route_status, with_route
from tests.operator.test_plan import LATER, converged, desired, kinds
from tests.operator.test_render import GOLDEN, OBSERVATIONS, SETTINGS
from tests.operator.test_spec import body as spec_body

CASE = "gateway-scale-to-zero"
ALL_CRDS = frozenset({children.HTTPROUTE_CRD, children.TRAFFIC_POLICY_CRD, children.KEDA_CRD})
TO_ZERO = {"minReplicas": 0, "maxReplicas": 2, "metric": "concurrency", "target": 4}


def load(**autoscaling: Any) -> specs.ModelDeployment:
    raw = yaml.safe_load((GOLDEN / f"{CASE}.input.yaml").read_text())
    raw["spec"]["autoscaling"].update(autoscaling)
    return specs.parse(raw)


def rendered(
    md: specs.ModelDeployment, *, gateway_api_installed: bool = True, traffic_policy_installed: bool = True
) -> dict[str, dict[str, Any]]:
    """The children with KEDA installed, and Gateway API and Envoy Gateway's policy CRD unless told."""
    seen = render.Observations(
        keda_installed=True,
        gateway_api_installed=gateway_api_installed,
        traffic_policy_installed=traffic_policy_installed,
    )
    return {m["kind"]: m for m in render.children(md, SETTINGS, seen)}


# --- spec ------------------------------------------------------------------------------------------


def test_min_replicas_zero_is_accepted_with_a_gateway_and_a_keda_metric() -> None:
    md = specs.parse(spec_body(gateway={"name": "modelplane"}, autoscaling=TO_ZERO))
    assert md.scales_to_zero
    assert md.autoscaling is not None
    assert md.autoscaling.cold_start_timeout_seconds == specs.COLD_START_TIMEOUT_SECONDS


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"autoscaling": TO_ZERO}, "spec.autoscaling.minReplicas 0 (scale to zero) needs spec.gateway"),
        (
            {"gateway": {"name": "modelplane"}, "autoscaling": {**TO_ZERO, "metric": "cpu"}},
            "needs spec.gateway and a KEDA metric",
        ),
        (
            {
                "gateway": {"name": "modelplane"},
                "autoscaling": TO_ZERO,
                "rollout": {
                    "strategy": "Canary",
                    "canary": {"model": {"uri": "s3://b/c", "format": "sklearn"}},
                },
            },
            "cannot be combined with spec.rollout.canary",
        ),
        (
            {"gateway": {"name": "modelplane"}, "autoscaling": {**TO_ZERO, "coldStartTimeoutSeconds": 4}},
            "spec.autoscaling.coldStartTimeoutSeconds must be between 5 and 3600",
        ),
    ],
)
def test_scale_to_zero_without_what_wakes_it_is_refused_naming_the_field(
    fields: dict[str, Any], named: str
) -> None:
    with pytest.raises(specs.SpecError, match=named.replace("(", r"\(").replace(")", r"\)")):
        specs.parse(spec_body(**fields))


def test_min_replicas_one_keeps_everything_as_it_was() -> None:
    md = load(minReplicas=1)
    assert not md.scales_to_zero
    manifests = rendered(md)
    assert "BackendTrafficPolicy" not in manifests
    assert manifests["HTTPRoute"]["spec"]["rules"][-1]["timeouts"] == {"request": "35s"}
    scaled = manifests["ScaledObject"]["spec"]
    assert scaled["minReplicaCount"] == 1
    assert len(scaled["triggers"]) == 1
    assert "pollingInterval" not in scaled


# --- render ----------------------------------------------------------------------------------------


def test_the_route_holds_a_request_while_a_pod_starts() -> None:
    manifests = rendered(load())
    policy = manifests["BackendTrafficPolicy"]["spec"]
    assert policy["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "iris"}
    ]
    # The cluster IP, so that no pod means a refused connection Envoy retries, not a 503 at once.
    assert policy["routingType"] == "Service"
    assert "connect-failure" in policy["retry"]["retryOn"]["triggers"]
    # Retries for the whole cold start (90 s) at the backoff's ceiling of 1 s (half of it on average).
    assert policy["retry"]["numRetries"] >= 2 * 90
    assert policy["retry"]["perRetry"]["backOff"]["maxInterval"] == "1s"
    assert policy["circuitBreaker"]["maxParallelRetries"] > 3  # Envoy's default would refuse a 4th client
    # The route waits for the cold start (90 s) and then the request itself (30 s + 5).
    for rule in manifests["HTTPRoute"]["spec"]["rules"]:
        assert rule["timeouts"] == {"request": "125s"}


def test_keda_wakes_the_model_on_the_routes_envoy_metrics() -> None:
    scaled = rendered(load())["ScaledObject"]["spec"]
    assert scaled["minReplicaCount"] == 0
    assert scaled["cooldownPeriod"] == 120  # the idle time before the last pod goes
    assert scaled["pollingInterval"] == 5
    runtime, gateway_requests = scaled["triggers"]
    assert runtime["metadata"]["query"].startswith("sum(modelplane_requests_in_flight{")
    assert gateway_requests["metadata"] == {
        "serverAddress": SETTINGS.prometheus_url,
        "query": route_activity_query(load()),
        "threshold": "1",
        "activationThreshold": "0",
    }
    query = gateway_requests["metadata"]["query"]
    assert 'envoy_cluster_name=~"httproute/ml/iris/rule/[0-9]+"' in query
    # Retries count too: they come while no pod runs. Summed apart (their rates share a label set).
    assert "sum(rate(envoy_cluster_upstream_rq_total{" in query
    assert "sum(rate(envoy_cluster_upstream_rq_retry{" in query
    assert query.startswith("clamp_max(")  # at most one pod from this trigger; the runtime's scales on


@pytest.mark.parametrize(
    ("gateway_api", "policy"), [(True, False), (False, True)], ids=["no-policy-crd", "no-gateway-api"]
)
def test_without_envoy_gateways_policy_the_model_keeps_one_pod(gateway_api: bool, policy: bool) -> None:
    manifests = rendered(load(), gateway_api_installed=gateway_api, traffic_policy_installed=policy)
    assert "BackendTrafficPolicy" not in manifests
    scaled = manifests["ScaledObject"]["spec"]
    assert scaled["minReplicaCount"] == 1
    assert len(scaled["triggers"]) == 1


# --- plan and status -------------------------------------------------------------------------------


def at_zero(seen: plan.Observed) -> plan.Observed:
    """The children as KEDA leaves them when it has scaled the Deployment to zero."""
    objects = {key: copy.deepcopy(dict(obj)) for key, obj in seen.children.items()}
    deployment = objects[("Deployment", "iris")]
    deployment["spec"]["replicas"] = 0
    deployment["status"] = {"observedGeneration": 1, "replicas": 0}
    route = route_status(objects.pop(("HTTPRoute", "iris")))
    others = plan.Observed(children=objects, crds=seen.crds, secrets=seen.secrets, gateway=seen.gateway)
    return with_route(others, route, gateway=seen.gateway)


def test_at_zero_pods_the_model_is_ready_scaled_to_zero_not_failing() -> None:
    want = desired(CASE)
    seen, written = converged(want, crds=ALL_CRDS, gateway=gateway())
    assert ("BackendTrafficPolicy", "iris") in kinds(tuple(seen.children.values()))
    result = plan.plan(want, at_zero(seen), written, LATER)
    assert result.apply == ()
    assert result.status is not None
    conditions = {c["type"]: c for c in result.status["conditions"]}
    assert {kind: (c["status"], c["reason"]) for kind, c in conditions.items()} == {
        "Ready": ("True", "ScaledToZero"),
        "Available": ("False", "ScaledToZero"),
        "Progressing": ("False", "ScaledToZero"),
        "Degraded": ("False", "ScaledToZero"),
    }
    assert "the next request to status.url starts one" in conditions["Ready"]["message"]
    assert "calls to the Service itself are refused" in conditions["Ready"]["message"]
    assert result.status["ready"] == "0/0"
    assert result.status["url"] == "https://172.28.0.1/ml/iris"
    # Not a failure: no Warning event.
    assert all(not event.warning for event in result.events)
    # Steady at zero: nothing more to write.
    assert plan.plan(want, at_zero(seen), {**written, **result.status}, LATER).status is None


def test_without_the_policy_crd_minreplicas_zero_is_degraded_saying_why() -> None:
    want = desired(CASE)
    crds = ALL_CRDS - {children.TRAFFIC_POLICY_CRD}
    seen, written = converged(want, crds=crds, gateway=gateway())
    assert "BackendTrafficPolicy" not in {kind for kind, _ in seen.children}
    degraded = status.condition(written, "Degraded")
    assert degraded is not None
    assert (degraded["status"], degraded["reason"]) == ("True", "ScaleToZeroUnavailable")
    assert "backendtrafficpolicies.gateway.envoyproxy.io" in degraded["message"]


def test_going_back_to_min_replicas_one_prunes_the_policy() -> None:
    want = desired(CASE)
    seen, written = converged(want, crds=ALL_CRDS, gateway=gateway())
    autoscaling = {**want_body_autoscaling(), "minReplicas": 1}
    result = plan.plan(desired(CASE, autoscaling=autoscaling), seen, written, LATER)
    assert {(r.kind, r.name) for r in result.prune} == {("BackendTrafficPolicy", "iris")}
    applied = {kind for kind, _ in kinds(result.apply)}
    assert {"HTTPRoute", "ScaledObject"} <= applied


def want_body_autoscaling() -> dict[str, Any]:
    autoscaling: dict[str, Any] = yaml.safe_load((GOLDEN / f"{CASE}.input.yaml").read_text())["spec"][
        "autoscaling"
    ]
    return autoscaling


def test_a_quota_and_scale_to_zero_share_the_routes_one_policy() -> None:
    """Envoy Gateway takes one BackendTrafficPolicy per route: the quota's rate limit and the retries
    that hold a request at zero pods are one object."""
    raw = yaml.safe_load((GOLDEN / "consumers.input.yaml").read_text())
    raw["spec"]["autoscaling"] = TO_ZERO
    md = specs.parse(raw)
    seen = dataclasses.replace(OBSERVATIONS["consumers"], keda_installed=True, gateway_api_installed=True)
    (policy,) = [m for m in render.children(md, SETTINGS, seen) if m["kind"] == "BackendTrafficPolicy"]
    assert policy["spec"]["rateLimit"]["local"]["rules"][0]["limit"] == {"requests": 5, "unit": "Minute"}
    assert policy["spec"]["responseOverride"][0]["match"]["statusCodes"] == [{"type": "Value", "value": 429}]
    assert policy["spec"]["routingType"] == "Service"
    assert "connect-failure" in policy["spec"]["retry"]["retryOn"]["triggers"]
