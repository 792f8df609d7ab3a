"""plan.plan case by case: what to apply, prune, write and post, from desired and observed state."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from modelplane import children, plan, status
from modelplane.render.common import ANNOTATION_APPLIED_HASH

from tests.operator.test_reconcile_compare import as_served
from tests.operator.test_render import AWS_KEYS, GOLDEN, SETTINGS

NOW = datetime(2026, 11, 23, 20, 0, 0, tzinfo=UTC)
LATER = datetime(2026, 11, 23, 20, 5, 0, tzinfo=UTC)


def body(case: str = "sklearn-s3", **changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((GOLDEN / f"{case}.input.yaml").read_text())
    obj["spec"].update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del obj["spec"][key]
    return obj


def desired(case: str = "sklearn-s3", **changes: Any) -> plan.Desired:
    return plan.desired(body(case, **changes), SETTINGS)


SECRETS = {"sklearn-s3": {"s3-credentials": AWS_KEYS}, "autoscaling-concurrency": {"gcs": frozenset()}}


def observed(*objects: Mapping[str, Any], crds: frozenset[str] = frozenset(), **kwargs: Any) -> plan.Observed:
    return plan.Observed(
        children={(o["kind"], o["metadata"]["name"]): o for o in objects}, crds=crds, **kwargs
    )


def converged(want: plan.Desired, **kwargs: Any) -> tuple[plan.Observed, dict[str, Any]]:
    """The children as the plans apply them until nothing is left to apply (as served, every
    Deployment rolled out), and the status the last plan writes."""
    live: dict[tuple[str, str], dict[str, Any]] = {}
    for _ in range(3):
        result = plan.plan(want, observed(*live.values(), **kwargs), {}, NOW)
        if not result.apply:
            assert result.status is not None
            return observed(*live.values(), **kwargs), dict(result.status)
        for manifest in result.apply:
            live[(manifest["kind"], manifest["metadata"]["name"])] = ready(as_served(dict(manifest)))
    raise AssertionError("the plans do not converge")


def ready(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "Deployment":
        replicas = obj["spec"].get("replicas", 1)
        obj["status"] = {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
        }
    return obj


def kinds(manifests: tuple[Any, ...]) -> list[tuple[str, str]]:
    return [(m["kind"], m["metadata"]["name"]) for m in manifests]


def test_a_new_model_deployment_applies_its_children_in_table_order() -> None:
    result = plan.plan(desired(), observed(secrets=SECRETS["sklearn-s3"]), {}, NOW)
    assert kinds(result.apply) == [
        ("NetworkPolicy", "iris"),
        ("Deployment", "iris"),
        ("Service", "iris"),
        ("PodDisruptionBudget", "iris"),
    ]
    orders = [children.apply_order(m["kind"]) for m in result.apply]
    assert orders == sorted(orders)
    assert result.prune == ()
    assert result.repairs == ()  # nothing existed before: creation, not repair
    assert result.status is not None
    assert status.condition(result.status, "Ready")["reason"] == "Creating"  # type: ignore[index]


def test_a_steady_state_plans_nothing() -> None:
    for case in ("sklearn-s3", "canary-ready", "autoscaling-cpu", "pvc", "access"):
        want = desired(case)
        seen, written = converged(want, secrets=SECRETS.get(case, {}))
        result = plan.plan(want, seen, written, LATER)
        assert result == plan.Plan(ready=result.ready), case


def leaves(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from leaves(value, (*path, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from leaves(value, (*path, index))
    else:
        yield path


def changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 7
    return f"{value}-edited"


@pytest.mark.parametrize("case", ["sklearn-s3", "canary-ready", "autoscaling-cpu", "gpu", "pvc", "access"])
def test_drift_of_each_owned_field_is_put_back(case: str) -> None:
    """Every field we render, edited by someone else on the live object, makes the plan re-apply
    that child (and count it as a repair); no other child is touched."""
    want = desired(case)
    seen, written = converged(want, secrets=SECRETS.get(case, {}))
    checked = 0
    for key, live in seen.children.items():
        rendered = next(
            m
            for m in plan.plan(want, plan.Observed(secrets=seen.secrets), {}, NOW).apply
            if (m["kind"], m["metadata"]["name"]) == key
        )
        for path in leaves(rendered):
            if path[:2] in (("metadata", "name"), ("metadata", "namespace")) or path[0] in (
                "apiVersion",
                "kind",
            ):
                continue  # identity, not a field one can edit in place
            if path[:2] == ("metadata", "ownerReferences"):
                continue  # ownership: the garbage collector's business, not drift
            edited: Any = copy.deepcopy(dict(live))
            target = edited
            for step in path[:-1]:
                target = target[step]
            target[path[-1]] = changed(target[path[-1]])
            result = plan.plan(
                want,
                observed(
                    *[edited if k == key else v for k, v in seen.children.items()], secrets=seen.secrets
                ),
                written,
                LATER,
            )
            if key == ("Deployment", "iris-canary") and path == ("spec", "replicas"):
                # Canary gating: a canary short of its pods is not Ready, so the stable track grows back.
                assert kinds(result.apply) == [("Deployment", "iris"), key]
            else:
                assert kinds(result.apply) == [key], (case, path)
            if path != ("metadata", "annotations", ANNOTATION_APPLIED_HASH):
                assert result.repairs == (plan.Repair(key[0], key[1], "edited"),), (case, path)
            checked += 1
    assert checked > 20


def test_a_deleted_child_is_recreated_and_counted() -> None:
    want = desired()
    seen, written = converged(want, secrets=SECRETS["sklearn-s3"])
    remaining = [o for k, o in seen.children.items() if k != ("Service", "iris")]
    result = plan.plan(want, observed(*remaining, secrets=seen.secrets), written, LATER)
    assert kinds(result.apply) == [("Service", "iris")]
    assert result.repairs == (plan.Repair("Service", "iris", "deleted"),)


def test_a_child_first_rendered_at_an_unchanged_generation_is_new_not_deleted() -> None:
    """KEDA's CRD arrived: the ScaledObject is applied for the first time, and the HPA goes."""
    want = desired("autoscaling-concurrency")
    secrets = SECRETS["autoscaling-concurrency"]
    seen, written = converged(want, secrets=secrets)
    assert ("ScaledObject", "busy") not in seen.children
    with_keda = observed(
        *seen.children.values(),
        crds=frozenset({children.KEDA_CRD}),
        secrets=secrets,
        seen=frozenset(seen.children),
    )
    result = plan.plan(want, with_keda, written, LATER)
    assert ("ScaledObject", "busy") in kinds(result.apply)
    assert result.repairs == ()
    # The same ScaledObject deleted by hand later is a repair.
    applied = {(m["kind"], m["metadata"]["name"]): ready(as_served(dict(m))) for m in result.apply}
    everything = frozenset(seen.children) | frozenset(applied)
    again = observed(
        *seen.children.values(), crds=frozenset({children.KEDA_CRD}), secrets=secrets, seen=everything
    )
    assert plan.Repair("ScaledObject", "busy", "deleted") in plan.plan(want, again, written, LATER).repairs


@pytest.mark.parametrize(
    ("case", "before", "after", "pruned"),
    [
        # canary removed: its Deployment and Service go, and the stable-only Service of the Canary strategy
        (
            "canary-ready",
            {},
            {"rollout": None},
            {("Deployment", "iris-canary"), ("Service", "iris-canary"), ("Service", "iris-stable")},
        ),
        (
            "autoscaling-cpu",
            {},
            {"autoscaling": None, "replicas": 1},
            {("HorizontalPodAutoscaler", "xgb"), ("PodDisruptionBudget", "xgb")},
        ),
        ("sklearn-s3", {}, {"replicas": 1}, {("PodDisruptionBudget", "iris")}),
        (
            "autoscaling-concurrency",
            {},
            {"autoscaling": {"minReplicas": 1, "maxReplicas": 10, "metric": "cpu", "target": 80}},
            {("ScaledObject", "busy")},
        ),
    ],
)
def test_prune_of_each_kind(
    case: str, before: dict[str, Any], after: dict[str, Any], pruned: set[tuple[str, str]]
) -> None:
    crds = frozenset({children.KEDA_CRD})
    old = desired(case, **before)
    seen, written = converged(old, crds=crds, secrets=SECRETS.get(case, {}))
    new = desired(case, **after)
    result = plan.plan(new, seen, written, LATER)
    assert {(r.kind, r.name) for r in result.prune} == pruned
    for ref in result.prune:
        live = seen.children[(ref.kind, ref.name)]
        assert ref.uid == live["metadata"]["uid"]
        assert ref.api_version == children.by_kind(ref.kind).api_version


def test_network_policies_turned_off_prunes_the_models_policy() -> None:
    old = desired("access")
    seen, written = converged(old)
    off = plan.desired(body("access"), replace(SETTINGS, network_policy=None))
    result = plan.plan(off, seen, written, LATER)
    assert {(r.kind, r.name) for r in result.prune} == {("NetworkPolicy", "iris")}
    assert result.apply == ()


def test_every_applied_kind_can_be_pruned() -> None:
    covered = {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ScaledObject",
        "HTTPRoute",  # tests/operator/test_gateway.py
        "NetworkPolicy",
        "PersistentVolumeClaim",  # tests/operator/test_cache.py
        "Job",  # tests/operator/test_cache.py
    }
    covered |= {"SecurityPolicy", "BackendTrafficPolicy"}  # tests/operator/test_consumers.py
    assert covered == {row.kind for row in children.applied_kinds()}


def test_children_of_a_namesake_are_neither_adopted_nor_pruned() -> None:
    want = desired()
    stray = as_served(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "iris-old", "namespace": "ml", "ownerReferences": [{"uid": "someone-else"}]},
            "spec": {},
        }
    )
    result = plan.plan(want, observed(stray, secrets=SECRETS["sklearn-s3"]), {}, NOW)
    assert result.prune == ()


def test_status_is_written_only_when_it_changes() -> None:
    want = desired()
    seen, written = converged(want, secrets=SECRETS["sklearn-s3"])
    assert plan.plan(want, seen, written, LATER).status is None
    # A replica less ready: written, with only the keys that changed meaning.
    deployment = copy.deepcopy(seen.children[("Deployment", "iris")])
    deployment["status"]["readyReplicas"] = 1
    others = [o for k, o in seen.children.items() if k != ("Deployment", "iris")]
    result = plan.plan(want, observed(deployment, *others, secrets=seen.secrets), written, LATER)
    assert result.status is not None
    assert result.status["readyReplicas"] == 1
    assert status.condition(result.status, "Ready")["lastTransitionTime"] == "2026-11-23T20:05:00Z"  # type: ignore[index]


def test_a_key_no_longer_computed_is_removed_from_status() -> None:
    want = desired()
    seen, written = converged(want, secrets=SECRETS["sklearn-s3"])
    result = plan.plan(want, seen, {**written, "canary": {"uri": "s3://old"}}, LATER)
    assert result.status is not None
    assert result.status["canary"] is None


def test_an_event_is_posted_only_on_a_transition() -> None:
    want = desired()
    first = plan.plan(want, observed(secrets=SECRETS["sklearn-s3"]), {}, NOW)
    assert [(e.reason, e.warning) for e in first.events] == [
        ("Creating", True)
    ]  # not degraded at birth: no news
    seen, written = converged(want, secrets=SECRETS["sklearn-s3"])
    became_ready = plan.plan(want, seen, dict(first.status or {}), LATER)
    assert [(e.reason, e.warning) for e in became_ready.events] == [("AllReplicasReady", False)]
    assert plan.plan(want, seen, written, LATER).events == ()  # the same again: nothing


def test_a_missing_secret_is_a_permanent_problem_named_in_status() -> None:
    want = desired()
    result = plan.plan(want, observed(secrets={"s3-credentials": None}), {}, NOW)
    assert result.status is not None
    assert status.condition(result.status, "Ready")["reason"] == "CredentialsSecretNotFound"  # type: ignore[index]
    assert status.condition(result.status, "Degraded")["status"] == "True"  # type: ignore[index]


def test_canary_gating_keeps_the_stable_replicas_until_the_canary_is_ready() -> None:
    want = desired("canary-ready")  # 5 replicas, 20 % to the canary: 1 canary pod, then 4 stable
    first = plan.plan(want, observed(), {}, NOW)
    replicas = {
        m["metadata"]["name"]: m["spec"].get("replicas") for m in first.apply if m["kind"] == "Deployment"
    }
    assert replicas == {"iris": 5, "iris-canary": 1}
    warming = [as_served(dict(m)) for m in first.apply]
    for obj in warming:
        if obj["kind"] == "Deployment":
            obj["status"] = {"observedGeneration": 1, "replicas": obj["spec"]["replicas"], "readyReplicas": 0}
    assert kinds(plan.plan(want, observed(*warming), {}, NOW).apply) == []  # still warming: stable keeps 5
    canary_ready = [ready(copy.deepcopy(o)) if o["metadata"]["name"] == "iris-canary" else o for o in warming]
    shrink = plan.plan(want, observed(*canary_ready), {}, NOW)
    assert kinds(shrink.apply) == [("Deployment", "iris")]
    assert shrink.apply[0]["spec"]["replicas"] == 4


def test_a_keda_model_waits_for_the_crd_then_gets_its_scaled_object() -> None:
    want = desired("autoscaling-concurrency")
    without = plan.plan(want, observed(secrets=SECRETS["autoscaling-concurrency"]), {}, NOW)
    assert "ScaledObject" not in {m["kind"] for m in without.apply}
    assert without.status is not None
    assert status.condition(without.status, "Degraded")["reason"] == "AutoscalerUnavailable"  # type: ignore[index]
    installed = frozenset({children.KEDA_CRD})
    with_keda = plan.plan(want, observed(crds=installed, secrets=SECRETS["autoscaling-concurrency"]), {}, NOW)
    assert ("ScaledObject", "busy") in kinds(with_keda.apply)


def test_an_invalid_spec_touches_nothing_and_says_why_once() -> None:
    want = desired(model={"uri": "ftp://nope", "format": "sklearn"})
    assert want.md is None
    assert "spec.model.uri" in want.invalid
    seen, _ = converged(desired(), secrets=SECRETS["sklearn-s3"])
    result = plan.plan(want, seen, {}, NOW)
    assert (result.apply, result.prune, result.result) == ((), (), "invalid")
    assert result.status is not None
    ready_condition = status.condition(result.status, "Ready")
    assert ready_condition is not None
    assert ready_condition["reason"] == "InvalidSpec"
    assert [e.reason for e in result.events] == ["InvalidSpec"]
    again = plan.plan(want, seen, dict(result.status), LATER)
    assert (again.status, again.events) == (None, ())


def test_apply_failed_keeps_the_first_transition_time_and_posts_once() -> None:
    want = desired()
    first = plan.not_ready(want, {}, "ApplyFailed", "quota exceeded", NOW)
    assert first.status is not None
    assert first.events[0].reason == "ApplyFailed"
    second = plan.not_ready(want, dict(first.status), "ApplyFailed", "quota exceeded", LATER)
    assert second.status is None
    assert second.events == ()
    other = plan.not_ready(want, dict(first.status), "ApplyFailed", "quota exceeded again", LATER)
    assert other.status is not None
    assert other.events == ()
    assert status.condition(other.status, "Ready")["lastTransitionTime"] == "2026-11-23T20:00:00Z"  # type: ignore[index]
