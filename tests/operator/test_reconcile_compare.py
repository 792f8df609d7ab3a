"""needs_apply: a steady state writes nothing, drift and spec changes are writes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from modelplane.kube import KubeError
from modelplane.plan import contains, needs_apply
from modelplane.reconcile import refused_for_good
from modelplane.render.common import ANNOTATION_APPLIED_HASH

from tests.operator.test_render import rendered


def as_served(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the API server returns for an applied manifest: defaults added, quantities normalized."""
    live = copy.deepcopy(manifest)
    live["metadata"].update({"uid": "x", "resourceVersion": "7", "generation": 1, "managedFields": []})
    live["status"] = {"replicas": 1}
    if live["kind"] == "Deployment":
        pod = live["spec"]["template"]["spec"]
        pod.update(
            {"restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler"}
        )
        for container in pod["containers"] + pod.get("initContainers", []):
            container["terminationMessagePath"] = container.get(
                "terminationMessagePath", "/dev/termination-log"
            )
            requests = container.get("resources", {}).get("requests", {})
            if requests.get("cpu") == "1000m":
                requests["cpu"] = "1"
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if probe in container:
                    container[probe]["successThreshold"] = 1
        live["spec"]["progressDeadlineSeconds"] = 600
    if live["kind"] == "Service":
        live["spec"].update({"clusterIP": "10.96.0.10", "sessionAffinity": "None"})
    return live


def test_steady_state_needs_no_apply() -> None:
    for case in ("sklearn-s3", "canary-ready", "autoscaling-cpu", "gpu", "pvc"):
        for manifest in rendered(case):
            assert not needs_apply(manifest, as_served(manifest)), (case, manifest["kind"])


def test_missing_child_is_applied() -> None:
    assert needs_apply(rendered("sklearn-s3")[0], None)


def test_edited_image_is_drift() -> None:
    deployment = rendered("sklearn-s3")[0]
    live = as_served(deployment)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx"
    assert needs_apply(deployment, live)


def test_edited_replicas_and_labels_are_drift() -> None:
    deployment = rendered("sklearn-s3")[0]
    live = as_served(deployment)
    live["spec"]["replicas"] = 7
    assert needs_apply(deployment, live)
    live = as_served(deployment)
    del live["metadata"]["labels"]["modelplane.io/name"]
    assert needs_apply(deployment, live)


def test_changed_rendering_is_applied_even_if_live_is_a_superset() -> None:
    deployment = rendered("sklearn-s3")[0]
    live = as_served(deployment)
    live["metadata"]["annotations"][ANNOTATION_APPLIED_HASH] = "0123456789abcdef"
    assert needs_apply(deployment, live)


def test_quantities_compare_by_value_only_under_resources() -> None:
    assert contains({"resources": {"requests": {"cpu": "1000m"}}}, {"resources": {"requests": {"cpu": "1"}}})
    assert contains(
        {"resources": {"limits": {"memory": "1Gi"}}}, {"resources": {"limits": {"memory": "1024Mi"}}}
    )
    assert not contains({"image": "1000m"}, {"image": "1"})
    assert not contains({"resources": {"requests": {"cpu": "2"}}}, {"resources": {"requests": {"cpu": "1"}}})


def test_lists_must_match_in_length() -> None:
    assert not contains({"args": ["a"]}, {"args": ["a", "b"]})
    assert contains({"args": []}, {})
    assert contains({"flag": False}, {})


def test_selectors_compare_whole() -> None:
    service = next(m for m in rendered("sklearn-s3") if m["kind"] == "Service")
    live = as_served(service)
    live["spec"]["selector"]["app"] = "other"
    assert needs_apply(service, live)


@pytest.mark.parametrize(
    ("code", "for_good"),
    [(403, True), (422, True), (400, True), (409, False), (429, False), (500, False), (503, False)],
)
def test_only_refusals_that_retries_cannot_fix_become_apply_failed(code: int, for_good: bool) -> None:
    """A quota or admission refusal is written to status as ApplyFailed; conflicts and 5xx are retried."""
    error = KubeError("apply", "Deployment ns/iris", ApiException(status=code, reason="x"))
    assert refused_for_good(error) is for_good
