"""spec.access (consumers, quota): the parser, the consumer directory, plans and the executor.

The rendered policies themselves are golden files (tests/operator/golden/consumers.*).
"""

from __future__ import annotations

from typing import Any

import modelplane_contract as contract
import pytest
from modelplane import children, plan, render, status
from modelplane import spec as specs
from modelplane.consumers import ANNOTATION_GROUPS, LABEL_CONSUMER, Consumer, Directory, directory

from tests.operator.memory_kube import MemoryKube
from tests.operator.test_gateway import gateway, route_status, with_route
from tests.operator.test_plan import LATER, NOW, converged, desired, kinds, observed
from tests.operator.test_reconcile import Clock, controller, md_body, run
from tests.operator.test_render import SETTINGS, load, rendered

POLICY_CRDS = frozenset({children.SECURITY_POLICY_CRD, children.TRAFFIC_POLICY_CRD, children.HTTPROUTE_CRD})
NAMESPACE = "modelplane-consumers"
DIRECTORY = Directory(
    NAMESPACE,
    (
        Consumer("alice"),
        Consumer("bob", frozenset({"team-a"})),
        Consumer("carol", frozenset({"team-a"})),
        Consumer("dave"),
    ),
)


def body(**access: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {
            "model": {"uri": "s3://b/k", "format": "sklearn"},
            "gateway": {"name": "modelplane"},
            "access": access,
        },
    }


# The parser (the CRD's CEL rules say the same at apply time: tests/e2e/test_consumers_e2e.py)


def test_access_is_parsed_with_defaults() -> None:
    md = specs.parse(body(consumers=["alice", "team-a"], quota={"requests": 5}))
    assert md.access == specs.Access(("alice", "team-a"), specs.Quota(5, "Second"))
    bare = specs.parse({**body(), "spec": {"model": {"uri": "s3://b/k", "format": "sklearn"}}})
    assert (bare.access, bare.consumers, bare.quota) == (None, (), None)


@pytest.mark.parametrize(
    ("access", "named"),
    [
        ({"consumers": ["Alice"]}, "spec.access.consumers[0]"),
        ({"consumers": ["alice", "bad_name"]}, "spec.access.consumers[1]"),
        ({"consumers": ["-alice"]}, "spec.access.consumers[0]"),
        ({"consumers": ["alice.1"]}, "spec.access.consumers[0]"),
        ({"consumers": ["a" * 64]}, "spec.access.consumers[0]"),
        ({"consumers": []}, "spec.access.consumers"),
        ({"consumers": ["alice", "alice"]}, "spec.access.consumers"),
        ({"consumers": "alice"}, "spec.access.consumers"),
        ({"consumers": ["alice"], "quota": {"requests": 0}}, "spec.access.quota.requests"),
        ({"consumers": ["alice"], "quota": {"requests": 5, "unit": "Day"}}, "spec.access.quota.unit"),
        ({"consumers": ["alice"], "quota": {}}, "spec.access.quota.requests"),
        ({"quota": {"requests": 5}}, "spec.access.quota needs spec.access.consumers"),
    ],
)
def test_bad_access_is_refused_naming_the_field(access: dict[str, Any], named: str) -> None:
    with pytest.raises(specs.SpecError, match=named.replace(".", r"\.").replace("[", r"\[")):
        specs.parse(body(**access))


def test_consumer_names_are_bounded_by_what_authorization_can_match() -> None:
    specs.parse(body(consumers=[f"c{i}" for i in range(specs.MAX_CONSUMERS)]))
    with pytest.raises(specs.SpecError, match=r"spec\.access\.consumers must name between 1 and 128"):
        specs.parse(body(consumers=[f"c{i}" for i in range(specs.MAX_CONSUMERS + 1)]))


# The directory and the client ids


def test_directory_from_metadata_keeps_consumer_names_and_groups_only() -> None:
    found = directory(
        NAMESPACE,
        [
            {"name": "bob", "annotations": {ANNOTATION_GROUPS: "team-a, premium,Bad_Group"}},
            {"name": "alice", "labels": {LABEL_CONSUMER: ""}},
            {"name": "not.a.consumer"},
        ],
    )
    assert found == Directory(
        NAMESPACE, (Consumer("alice"), Consumer("bob", frozenset({"team-a", "premium"})))
    )


def test_names_resolve_to_consumers_by_name_or_group() -> None:
    resolved = DIRECTORY.resolve(["team-a", "alice", "nobody"])
    assert resolved.allowed == ("alice", "bob", "carol")
    assert resolved.unknown == ("nobody",)


def test_client_ids_split_back_into_their_consumer() -> None:
    assert contract.client_ids("team-b") == ("team-b.1", "team-b.2")
    for consumer in ("alice", "team-b", "a", "x" * 63):
        for client_id in contract.client_ids(consumer):
            assert contract.consumer_of(client_id) == consumer
    for other in ("alice", "alice.3", ".1", "Alice.1", "-a.1", "a-.1", "é.1", "a_b.1", "x" * 64 + ".1"):
        assert contract.consumer_of(other) is None, other


# Rendering and planning


def test_the_policies_target_the_route_and_allow_only_the_resolved_consumers() -> None:
    manifests = {m["kind"]: m for m in rendered("consumers")}
    policy = manifests["SecurityPolicy"]["spec"]
    refs = [ref["name"] for ref in policy["apiKeyAuth"]["credentialRefs"]]
    assert refs == ["alice", "bob", "carol", "dave"]  # every consumer authenticates: dave gets 403, not 401
    [rule] = policy["authorization"]["rules"]
    [header] = rule["principal"]["headers"]
    assert header["name"] == contract.CONSUMER_HEADER
    assert header["values"] == ["alice.1", "alice.2", "bob.1", "bob.2", "carol.1", "carol.2"]
    assert policy["authorization"]["defaultAction"] == "Deny"
    limit = manifests["BackendTrafficPolicy"]["spec"]
    [rate_rule] = limit["rateLimit"]["local"]["rules"]
    assert rate_rule["clientSelectors"] == [
        {"headers": [{"name": contract.CONSUMER_HEADER, "type": "Distinct"}]}
    ]
    [override] = limit["responseOverride"]
    assert override["response"]["header"]["set"] == [{"name": "Retry-After", "value": "60"}]
    for manifest in manifests.values():
        if manifest["kind"] in ("SecurityPolicy", "BackendTrafficPolicy"):
            assert manifest["spec"]["targetRefs"] == [
                {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "iris"}
            ]


def test_policies_are_applied_before_the_route_would_be() -> None:
    order = [row.kind for row in children.CHILD_KINDS]
    assert order.index("SecurityPolicy") < order.index("BackendTrafficPolicy")
    if "HTTPRoute" in order:
        assert order.index("SecurityPolicy") < order.index("HTTPRoute")


def ready_access(want: plan.Desired) -> tuple[plan.Observed, dict[str, Any]]:
    """Converged, the Gateway there and our route accepted by it; the status that state gives."""
    seen, written = converged(want, crds=POLICY_CRDS, consumers=DIRECTORY, gateway=gateway())
    route = route_status(seen.children[("HTTPRoute", "iris")])
    seen = with_route(seen, route, gateway=gateway(), consumers=DIRECTORY)
    result = plan.plan(want, seen, written, LATER)
    assert result.apply == ()
    return seen, {**written, **(result.status or {})}


def test_known_consumers_converge_to_ready_and_a_steady_state_plans_nothing() -> None:
    want = desired("consumers")
    seen, written = ready_access(want)
    assert status.condition(written, "Ready")["reason"] == "AllReplicasReady"  # type: ignore[index]
    assert ("SecurityPolicy", "iris") in seen.children
    assert ("BackendTrafficPolicy", "iris") in seen.children
    result = plan.plan(want, seen, written, LATER)
    assert result == plan.Plan(ready="True")


def test_an_unknown_consumer_is_ready_false_naming_it_and_the_others_are_served() -> None:
    want = desired("consumers", access={"consumers": ["alice", "zed"]})
    seen, written = ready_access(want)
    ready = status.condition(written, "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "UnknownConsumer")
    assert "'zed'" in ready["message"]
    assert NAMESPACE in ready["message"]
    assert "alice" not in ready["message"]
    assert status.condition(written, "Available")["status"] == "True"  # type: ignore[index]
    values = seen.children[("SecurityPolicy", "iris")]["spec"]["authorization"]["rules"][0]["principal"]
    assert values["headers"][0]["values"] == ["alice.1", "alice.2"]


def test_only_unknown_consumers_refuse_every_request() -> None:
    want = desired("consumers", access={"consumers": ["zed"]})
    seen, _ = ready_access(want)
    policy = seen.children[("SecurityPolicy", "iris")]["spec"]
    assert policy["authorization"] == {"defaultAction": "Deny", "rules": []}


def test_without_envoy_gateway_access_is_reported_and_nothing_is_rendered() -> None:
    want = desired("consumers")
    crds = frozenset({children.HTTPROUTE_CRD})
    result = plan.plan(want, observed(consumers=DIRECTORY, crds=crds, gateway=gateway()), {}, NOW)
    assert ("SecurityPolicy", "iris") not in kinds(result.apply)
    assert ("HTTPRoute", "iris") not in kinds(result.apply)  # closed: no route without its keys
    assert result.status is not None
    ready = status.condition(result.status, "Ready")
    assert ready is not None
    assert ready["reason"] == "AccessPolicyUnavailable"
    assert "SecurityPolicy and BackendTrafficPolicy" in ready["message"]


@pytest.mark.parametrize(
    ("after", "pruned"),
    [
        ({"consumers": ["alice"]}, {("BackendTrafficPolicy", "iris")}),
        (None, {("BackendTrafficPolicy", "iris"), ("SecurityPolicy", "iris")}),
    ],
)
def test_access_no_longer_asked_for_is_pruned(after: dict[str, Any] | None, pruned: set[Any]) -> None:
    seen, written = ready_access(desired("consumers"))
    result = plan.plan(desired("consumers", access=after), seen, written, LATER)
    assert {(r.kind, r.name) for r in result.prune} == pruned


# The executor: the directory is one metadata LIST, shared, and re-read when it matters


@pytest.fixture
def kube() -> MemoryKube:
    kube = MemoryKube()
    kube.crds |= POLICY_CRDS
    kube.consumer_metadata[NAMESPACE] = [{"name": "alice"}, {"name": "bob"}]
    return kube


def lists(kube: MemoryKube) -> int:
    return kube.calls.count(("list", "Secret", NAMESPACE))


def test_the_directory_is_listed_once_then_served_from_memory(kube: MemoryKube) -> None:
    kube.create_md(md_body("consumers", access={"consumers": ["alice"]}) | {"metadata": _meta()})
    ctl = controller(kube)
    run(ctl, ("team-b", "iris"))
    run(ctl, ("team-b", "iris"))
    assert lists(kube) == 1
    assert ctl.reconciler.refresh_consumers() is False
    kube.consumer_metadata[NAMESPACE].append({"name": "carol"})
    assert ctl.reconciler.refresh_consumers() is True  # the controller then reconciles everything


def test_a_consumer_created_later_is_found_without_a_spec_change(kube: MemoryKube) -> None:
    clock = Clock()
    kube.create_md(md_body("consumers", access={"consumers": ["alice", "zed"]}) | {"metadata": _meta()})
    ctl = controller(kube, clock)
    key = ("team-b", "iris")
    run(ctl, key)
    md = kube.objects[("ModelDeployment", *key)]
    assert md["status"]["conditions"][0]["reason"] == "UnknownConsumer"
    kube.consumer_metadata[NAMESPACE].append({"name": "zed"})
    run(ctl, key)
    assert lists(kube) == 1  # an unknown name re-reads at most every few seconds
    clock.now += 6
    run(ctl, key)
    assert md["status"]["conditions"][0]["reason"] != "UnknownConsumer"
    policy = kube.objects[("SecurityPolicy", *key)]["spec"]
    assert [ref["name"] for ref in policy["apiKeyAuth"]["credentialRefs"]] == ["alice", "bob", "zed"]


def test_a_model_without_access_lists_no_secret(kube: MemoryKube) -> None:
    kube.create_md(md_body("consumers", access=None) | {"metadata": _meta()})
    ctl = controller(kube)
    run(ctl, ("team-b", "iris"))
    assert lists(kube) == 0
    assert ctl.reconciler.refresh_consumers() is False


def _meta() -> dict[str, Any]:
    return {"name": "iris", "namespace": "team-b", "uid": "5e6f7a8b"}


def test_consumers_need_a_gateway() -> None:
    model = {"uri": "s3://b/k", "format": "sklearn"}
    no_gateway = {"metadata": {"name": "m"}, "spec": {"model": model, "access": {"consumers": ["alice"]}}}
    with pytest.raises(specs.SpecError, match=r"spec\.access\.consumers needs spec\.gateway"):
        specs.parse(no_gateway)


def test_only_a_shadow_bills_nobody() -> None:
    """The shadow's copies of live requests carry the client id too: its runtime counts no usage."""

    def usage_env(manifest: dict[str, Any]) -> list[Any]:
        [server] = [
            c
            for c in manifest["spec"]["template"]["spec"]["containers"]
            if c["name"] == contract.SERVER_CONTAINER_NAME
        ]
        return [e for e in server["env"] if e["name"] == contract.ENV_USAGE]

    deployments = {
        m["metadata"]["name"]: m
        for m in render.children(load("gateway-shadow"), SETTINGS)
        if m["kind"] == "Deployment"
    }
    assert len(deployments) == 2
    for name, manifest in deployments.items():
        expected = [{"name": contract.ENV_USAGE, "value": "false"}] if name.endswith("-shadow") else []
        assert usage_env(manifest) == expected, name
