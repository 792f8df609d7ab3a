"""spec.model.cache: the parser's refusals, the claim and fill Job rendered once per digest, the plan
that holds a Deployment until its cache is filled and prunes a cache nothing mounts, and status."""

from __future__ import annotations

import copy
from typing import Any

import modelplane_contract as contract
import pytest
from kubernetes.client.exceptions import ApiException
from modelplane import children, plan, render, spec, status
from modelplane.cache import Snapshot
from modelplane.informer import Store
from modelplane.kube import KubeError
from modelplane.render.cache import LABEL_CACHE_OF, mounted_claims, owner_of
from modelplane.render.common import LABEL_MANAGED_BY, LABEL_NAME, MANAGED_BY, cache_name

from tests.operator.memory_kube import MemoryKube
from tests.operator.test_plan import LATER, NOW, body, kinds, observed, ready
from tests.operator.test_reconcile import Clock, controller, run
from tests.operator.test_reconcile_compare import as_served
from tests.operator.test_render import AWS_KEYS, SETTINGS

CASE = "sklearn-cache"
SECRETS = {"s3-credentials": AWS_KEYS}
V1 = "sha256:" + "ab" * 32
V2 = "sha256:" + "cd" * 32


def md_body(digest: str = V1, **cache: Any) -> dict[str, Any]:
    obj = body(CASE)
    obj["spec"]["model"]["digest"] = digest
    obj["spec"]["model"]["cache"].update(cache)
    return obj


def parsed(digest: str = V1, **cache: Any) -> spec.ModelDeployment:
    return spec.parse(md_body(digest, **cache))


def name_of(digest: str = V1, **cache: Any) -> str:
    md = parsed(digest, **cache)
    name = cache_name(md, md.model)
    assert name is not None
    return name


def served(manifest: Any) -> dict[str, Any]:
    return ready(as_served(dict(manifest)))


def bound(claim: dict[str, Any]) -> dict[str, Any]:
    claim = copy.deepcopy(claim)
    claim["status"] = {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}
    return claim


def finished(job: dict[str, Any], condition: str = "Complete", reason: str = "", message: str = "") -> Any:
    job = copy.deepcopy(job)
    job["status"] = {
        "conditions": [{"type": condition, "status": "True", "reason": reason, "message": message}]
    }
    return job


ARTIFACT_BYTES = 1234  # what the fill pods' pull reports in these tests


def pulled(digest: str = V1, size: int = ARTIFACT_BYTES) -> str:
    """The termination message of a successful pull (tests/runtime/pull checks the pull writes it)."""
    return contract.format_pulled_message(contract.Pulled("s3://models/iris/model.joblib", digest, size))


def fill_pod(job: dict[str, Any], message: str | None = None, *, exit_code: int = 0) -> dict[str, Any]:
    """A pod of the fill Job JOB as the Job controller makes it: the template's labels, owned by the Job;
    its pull still running (MESSAGE None) or terminated with EXIT_CODE and MESSAGE."""
    name = job["metadata"]["name"]
    template = job["spec"]["template"]
    state: dict[str, Any] = {"running": {}}
    if message is not None:
        state = {"terminated": {"exitCode": exit_code, "reason": "Completed", "message": message}}
    done = message is not None
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-x7k2p",
            "namespace": job["metadata"]["namespace"],
            "uid": f"pod-of-{name}",
            "resourceVersion": "9",
            "labels": {**template["metadata"]["labels"], "batch.kubernetes.io/job-name": name},
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job["metadata"]["uid"]}
            ],
        },
        "spec": copy.deepcopy(template["spec"]),
        "status": {
            "phase": ("Succeeded" if exit_code == 0 else "Failed") if done else "Running",
            "containerStatuses": [{"name": contract.PULL_CONTAINER_NAME, "state": state}],
        },
    }


def pod_of(deployment: dict[str, Any], name: str, *, running: bool = True) -> dict[str, Any]:
    template = deployment["spec"]["template"]
    return {
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(template["metadata"]["labels"])},
        "spec": copy.deepcopy(template["spec"]),
        "status": {
            "phase": "Running" if running else "Succeeded",
            "containerStatuses": [
                {"name": contract.SERVER_CONTAINER_NAME, "ready": running, "state": {"running": {}}}
            ],
        },
    }


# --- spec -----------------------------------------------------------------------------------------


def test_the_cache_parses_with_its_defaults() -> None:
    cache = parsed().model.cache
    assert cache == spec.Cache(size="1Gi", storage_class_name="local-path", access_mode="ReadWriteOnce")
    assert parsed(accessMode="ReadWriteMany").model.cache.access_mode == "ReadWriteMany"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"digest": None}, "spec.model.cache needs spec.model.digest"),
        ({"uri": "pvc://claim/iris", "digest": None}, "spec.model.cache: a pvc:// model is a claim already"),
        ({"cache": {}}, "spec.model.cache.size is required"),
        ({"cache": {"size": "lots"}}, "spec.model.cache.size: 'lots' is not a storage size"),
        ({"cache": {"size": "0Gi"}}, "spec.model.cache.size: '0Gi' is not a storage size"),
        ({"cache": {"size": "1Gi", "accessMode": "ReadOnlyMany"}}, "ReadOnlyMany cannot be filled"),
        ({"cache": {"size": "1Gi", "storageClassName": "Fast_SSD"}}, "spec.model.cache.storageClassName"),
    ],
)
def test_bad_cache_settings_name_the_field(change: dict[str, Any], message: str) -> None:
    obj = md_body()
    for key, value in change.items():
        if value is None:
            obj["spec"]["model"].pop(key)
        else:
            obj["spec"]["model"][key] = value
    with pytest.raises(spec.SpecError, match=message.replace("(", r"\(").replace(".", r"\.")):
        spec.parse(obj)


def test_a_canary_model_takes_a_cache_too() -> None:
    obj = md_body()
    model = copy.deepcopy(obj["spec"]["model"])
    model["digest"] = V2
    obj["spec"]["rollout"] = {"strategy": "Canary", "canary": {"model": model}}
    md = spec.parse(obj)
    assert md.canary is not None
    assert md.canary.model.cache == md.model.cache


# --- render ---------------------------------------------------------------------------------------


def test_the_name_is_per_digest_and_cache_settings_never_generated() -> None:
    assert name_of() == name_of()  # a restarted operator renders the same
    assert name_of() == "iris-cache-ababababab-3912"
    assert name_of(V2) != name_of()
    assert name_of(size="2Gi") != name_of()  # a bigger claim is a new cache, not a refused patch
    obj = md_body()
    obj["metadata"]["name"] = "a" * 253
    md = spec.parse(obj)
    name = cache_name(md, md.model)
    assert name is not None
    assert len(name) <= 63  # the Job's name is a label value of its pods


def test_replicas_mount_the_claim_read_only_and_pull_nothing() -> None:
    md = parsed()
    manifests = render.children(md, SETTINGS, render.Observations(secret_keys=AWS_KEYS))
    by_key = {(m["kind"], m["metadata"]["name"]): m for m in manifests}
    name = name_of()
    pod = by_key[("Deployment", "iris")]["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert {
        "name": contract.MODEL_VOLUME_NAME,
        "persistentVolumeClaim": {"claimName": name, "readOnly": True},
    } in (pod["volumes"])
    assert mounted_claims(pod) == {name}
    job = by_key[("Job", name)]["spec"]
    pull = job["template"]["spec"]["containers"][0]
    assert pull["command"] == [contract.RUNTIME_COMMAND, contract.PULL_SUBCOMMAND]
    assert {"name": contract.ENV_MODEL_DIGEST, "value": V1} in pull["env"]
    assert pull["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    # The Job's pods are not the model's: the model's Service selects by LABEL_NAME.
    assert LABEL_NAME not in job["template"]["metadata"]["labels"]
    assert job["template"]["metadata"]["labels"][LABEL_CACHE_OF] == "iris"
    # ...but the operator's pod watch (server-side filtered by our label) shows them, under the model's key.
    assert {LABEL_MANAGED_BY: MANAGED_BY}.items() <= job["template"]["metadata"]["labels"].items()
    assert owner_of(job["template"]["metadata"]["labels"]) == "iris"
    assert "generateName" not in by_key[("Job", name)]["metadata"]
    claim = by_key[("PersistentVolumeClaim", name)]["spec"]
    assert claim == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}},
        "storageClassName": "local-path",
    }


def test_tracks_of_one_digest_share_one_cache() -> None:
    obj = md_body()
    obj["spec"]["rollout"] = {"strategy": "Canary", "canary": {"model": copy.deepcopy(obj["spec"]["model"])}}
    manifests = render.children(spec.parse(obj), SETTINGS)
    assert [m["kind"] for m in manifests].count("Job") == 1


# --- plan -----------------------------------------------------------------------------------------


def want(digest: str = V1) -> plan.Desired:
    return plan.desired(md_body(digest), SETTINGS)


def test_the_deployment_waits_for_its_cache() -> None:
    first = plan.plan(want(), observed(secrets=SECRETS), {}, NOW)
    name = name_of()
    assert kinds(first.apply) == [
        ("NetworkPolicy", "iris"),
        ("PersistentVolumeClaim", name),
        ("Job", name),
        ("Service", "iris"),
        ("PodDisruptionBudget", "iris"),
    ]
    assert first.status is not None
    ready_condition = status.condition(first.status, "Ready")
    assert ready_condition is not None
    assert ready_condition["reason"] == "ModelCaching"
    live = {(m["kind"], m["metadata"]["name"]): served(m) for m in first.apply}
    filling = plan.plan(want(), observed(*live.values(), secrets=SECRETS), first.status, NOW)
    assert filling.apply == ()  # the Job runs; nothing else to do
    live[("PersistentVolumeClaim", name)] = bound(live[("PersistentVolumeClaim", name)])
    live[("Job", name)] = finished(live[("Job", name)])
    filled = plan.plan(want(), observed(*live.values(), secrets=SECRETS), first.status, NOW)
    assert kinds(filled.apply) == [("Deployment", "iris")]


def converged_on(digest: str) -> tuple[dict[tuple[str, str], Any], dict[str, Any]]:
    live: dict[tuple[str, str], Any] = {}
    written: dict[str, Any] = {}
    for _ in range(4):
        result = plan.plan(want(digest), observed(*live.values(), secrets=SECRETS), written, NOW)
        written = dict(result.status or written)
        if not result.apply and not result.prune:
            return live, written
        for manifest in result.apply:
            obj = served(manifest)
            if obj["kind"] == "PersistentVolumeClaim":
                obj = bound(obj)
            if obj["kind"] == "Job":
                obj = finished(obj)
            live[(obj["kind"], obj["metadata"]["name"])] = obj
    raise AssertionError("the plans do not converge")


def test_a_steady_state_with_a_filled_cache_plans_nothing() -> None:
    live, written = converged_on(V1)
    assert ("Deployment", "iris") in live
    again = plan.plan(want(), observed(*live.values(), secrets=SECRETS), written, LATER)
    assert again == plan.Plan(ready=again.ready)


def test_a_new_digest_fills_a_new_cache_while_the_old_pods_serve_then_the_old_one_is_pruned() -> None:
    live, written = converged_on(V1)
    old, new = name_of(V1), name_of(V2)
    old_pods = [pod_of(live[("Deployment", "iris")], f"iris-old-{i}") for i in range(3)]
    step = plan.plan(want(V2), observed(*live.values(), pods=old_pods, secrets=SECRETS), written, LATER)
    assert kinds(step.apply) == [("PersistentVolumeClaim", new), ("Job", new)]
    assert step.prune == ()  # the old cache and the Deployment serving from it stay
    assert step.status is not None
    assert status.condition(step.status, "Ready")["reason"] == "ModelCaching"  # type: ignore[index]
    for manifest in step.apply:
        live[(manifest["kind"], manifest["metadata"]["name"])] = served(manifest)
    # Filling: still nothing for the Deployment.
    filling = plan.plan(want(V2), observed(*live.values(), pods=old_pods, secrets=SECRETS), written, LATER)
    assert filling.apply == ()
    assert filling.prune == ()
    live[("PersistentVolumeClaim", new)] = bound(live[("PersistentVolumeClaim", new)])
    live[("Job", new)] = finished(live[("Job", new)])
    roll = plan.plan(want(V2), observed(*live.values(), pods=old_pods, secrets=SECRETS), written, LATER)
    assert kinds(roll.apply) == [("Deployment", "iris")]
    assert mounted_claims(roll.apply[0]["spec"]["template"]["spec"]) == {new}
    assert roll.prune == ()  # the old pods still mount the old claim
    live[("Deployment", "iris")] = served(roll.apply[0])
    new_pods = [pod_of(live[("Deployment", "iris")], f"iris-new-{i}") for i in range(3)]
    draining = old_pods[:1] + new_pods
    step = plan.plan(want(V2), observed(*live.values(), pods=draining, secrets=SECRETS), written, LATER)
    assert step.prune == ()
    gone = plan.plan(want(V2), observed(*live.values(), pods=new_pods, secrets=SECRETS), written, LATER)
    assert {(r.kind, r.name) for r in gone.prune} == {("Job", old), ("PersistentVolumeClaim", old)}
    assert [r.kind for r in gone.prune] == ["Job", "PersistentVolumeClaim"]  # the table, backwards


def test_a_cache_being_deleted_is_not_deleted_again() -> None:
    live, written = converged_on(V1)
    old = name_of(V1)
    claim = copy.deepcopy(live[("PersistentVolumeClaim", old)])
    claim["metadata"]["deletionTimestamp"] = "2026-11-23T20:01:00Z"  # held by pvc-protection
    live[("PersistentVolumeClaim", old)] = claim
    del live[("Job", old)]
    v2, _ = converged_on(V2)
    objects = {**v2, ("PersistentVolumeClaim", old): claim}
    result = plan.plan(want(V2), observed(*objects.values(), secrets=SECRETS), written, LATER)
    assert result.prune == ()


def test_a_claim_and_job_are_created_never_patched() -> None:
    live, written = converged_on(V1)
    name = name_of()
    job = copy.deepcopy(live[("Job", name)])
    job["spec"]["backoffLimit"] = 1  # as if an older operator rendered it: the API refuses changes
    job["metadata"]["annotations"]["modelplane.io/applied-hash"] = "older"
    live[("Job", name)] = job
    result = plan.plan(want(), observed(*live.values(), secrets=SECRETS), written, LATER)
    assert result.apply == ()
    assert children.by_kind("Job").create_only
    assert children.by_kind("PersistentVolumeClaim").create_only


def test_a_deleted_fill_job_is_made_again_under_the_same_name() -> None:
    live, written = converged_on(V1)
    name = name_of()
    del live[("Job", name)]
    result = plan.plan(
        want(),
        observed(*live.values(), secrets=SECRETS, seen=frozenset(live) | {("Job", name)}),
        written,
        LATER,
    )
    assert kinds(result.apply) == [("Job", name)]
    assert result.repairs == (plan.Repair("Job", name, "deleted"),)


# --- status ---------------------------------------------------------------------------------------


def cache_status(
    claim: Any,
    job: Any,
    digest: str = V1,
    fill_pods: tuple[dict[str, Any], ...] = (),
    previous: dict[str, Any] | None = None,
    **cache: Any,
) -> dict[str, Any]:
    md = parsed(digest, **cache)
    name = name_of(digest, **cache)
    observed = status.Observed(caches={name: (claim, job)}, fill_pods=fill_pods)
    return status.compute(md, observed, previous or {}, NOW)


def rendered_pair(digest: str = V1, **cache: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    manifests = render.children(parsed(digest, **cache), SETTINGS)
    pick = {m["kind"]: served(m) for m in manifests if m["kind"] in ("PersistentVolumeClaim", "Job")}
    return pick["PersistentVolumeClaim"], pick["Job"]


def test_status_shows_each_state_and_the_size() -> None:
    claim, job = rendered_pair()
    pending = cache_status(None, None)
    assert pending["caches"][0]["state"] == status.CACHE_PENDING
    assert status.condition(pending, "Cached")["reason"] == "ModelCaching"  # type: ignore[index]
    assert status.condition(pending, "Ready")["reason"] == "ModelCaching"  # type: ignore[index]
    filling = cache_status(bound(claim), job, fill_pods=(fill_pod(job),))
    assert filling["caches"][0]["state"] == status.CACHE_FILLING
    assert "is pulling s3://models/iris/model.joblib" in filling["caches"][0]["message"]
    assert "bytes" not in filling["caches"][0]
    # The pull has reported, the Job controller has not marked the Job Complete yet: still filling.
    reported = cache_status(bound(claim), job, fill_pods=(fill_pod(job, pulled()),))
    assert reported["caches"][0]["state"] == status.CACHE_FILLING
    assert "bytes" not in reported["caches"][0]
    done = cache_status(bound(claim), finished(job), fill_pods=(fill_pod(job, pulled()),))
    assert done["caches"] == [
        {
            "name": name_of(),
            "digest": V1,
            "state": status.CACHE_READY,
            "size": "1Gi",
            "bytes": ARTIFACT_BYTES,
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "local-path",
        }
    ]
    cached = status.condition(done, "Cached")
    assert cached is not None
    assert cached["status"] == "True"
    assert "ReadWriteOnce" in cached["message"]  # one node shares it: said


def test_the_bytes_come_from_the_fill_jobs_own_pod_whichever_pod_of_it_succeeded() -> None:
    claim, job = rendered_pair()
    transient = contract.format_termination_message(contract.REASON_TRANSIENT, "connection reset")
    failed_first = fill_pod(job, transient, exit_code=contract.EXIT_TRANSIENT)
    failed_first["metadata"]["name"] += "-first"
    done = cache_status(bound(claim), finished(job), fill_pods=(failed_first, fill_pod(job, pulled(size=77))))
    assert done["caches"][0]["bytes"] == 77


@pytest.mark.parametrize(
    "message",
    [
        "",
        "Pulled",
        "Pulled: s3://models/iris/model.joblib",  # cut short
        f"Pulled: s3://models/iris/model.joblib {V1} (many bytes)",
        f"Pulled: s3://models/iris/model.joblib {V1} (-5 bytes)",
        f"Pulled: s3://models/iris/model.joblib {V1[:-1]} (1234 bytes)",
        f"Pulled: s3://models/iris/model.joblib {V2} (1234 bytes)",  # another digest than the cache's
        f"Fetched: s3://models/iris/model.joblib {V1} (1234 bytes)",
        "\x00\xff not a message at all",
    ],
)
def test_a_malformed_fill_message_leaves_the_bytes_out_and_status_whole(message: str) -> None:
    claim, job = rendered_pair()
    done = cache_status(bound(claim), finished(job), fill_pods=(fill_pod(job, message),))
    [cache] = done["caches"]
    assert cache["state"] == status.CACHE_READY
    assert "bytes" not in cache
    assert status.condition(done, "Cached")["status"] == "True"  # type: ignore[index]


def test_only_a_successful_pull_of_this_very_job_counts() -> None:
    claim, job = rendered_pair()
    failed = fill_pod(job, pulled(), exit_code=contract.EXIT_TRANSIENT)
    namesake = fill_pod(job, pulled())  # a pod of a deleted Job of the same name
    namesake["metadata"]["ownerReferences"][0]["uid"] = "uid-of-a-deleted-job"
    done = cache_status(bound(claim), finished(job), fill_pods=(failed, namesake))
    assert "bytes" not in done["caches"][0]


def test_the_bytes_stay_once_the_fill_pod_is_gone() -> None:
    claim, job = rendered_pair()
    first = cache_status(bound(claim), finished(job), fill_pods=(fill_pod(job, pulled()),))
    later = cache_status(bound(claim), finished(job), previous=first)  # the pod was garbage-collected
    assert later["caches"] == first["caches"]
    # Not carried into another cache: a new digest's is absent until its own pod reports.
    claim2, job2 = rendered_pair(V2)
    other = cache_status(bound(claim2), finished(job2), V2, previous=first)
    assert "bytes" not in other["caches"][0]


def test_a_failed_fill_is_degraded_with_what_to_do() -> None:
    claim, job = rendered_pair()
    message = "Container model-pull for pod ml/x failed with exit code 10 matching FailJob rule at index 0"
    failed = cache_status(bound(claim), finished(job, "Failed", "PodFailurePolicy", message))
    ready_condition = status.condition(failed, "Ready")
    degraded = status.condition(failed, "Degraded")
    assert ready_condition is not None
    assert degraded is not None
    assert ready_condition["reason"] == "CacheFillFailed"
    assert degraded["status"] == "True"
    assert "permanent pull failure" in ready_condition["message"]
    assert f"kubectl logs job/{name_of()}" in ready_condition["message"]
    assert failed["caches"][0]["state"] == status.CACHE_FAILED


def test_a_claim_the_storage_class_cannot_bind_says_which_access_mode() -> None:
    claim, job = rendered_pair(accessMode="ReadWriteMany")
    claim["status"] = {"phase": "Pending"}
    pending = cache_status(claim, job, accessMode="ReadWriteMany")
    message = pending["caches"][0]["message"]
    assert "may not offer ReadWriteMany" in message
    assert f"kubectl describe pvc {name_of(accessMode='ReadWriteMany')}" in message


def test_an_unschedulable_replica_of_a_one_node_cache_says_why() -> None:
    md = parsed()
    deployment = render.children(md, SETTINGS)[2]
    assert deployment["kind"] == "Deployment"
    pod = pod_of(deployment, "iris-x")
    pod["status"] = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/2 nodes are available: 1 node(s) had volume node affinity conflict.",
            }
        ],
    }
    claim, job = rendered_pair()
    result = status.compute(
        md, status.Observed(pods=[pod], caches={name_of(): (bound(claim), finished(job))}), {}, NOW
    )
    ready_condition = status.condition(result, "Ready")
    assert ready_condition is not None
    assert "spec.model.cache.accessMode: ReadWriteMany" in ready_condition["message"]


def test_the_served_digest_of_a_cached_model_is_the_caches() -> None:
    md = parsed()
    deployment = render.children(md, SETTINGS)[2]
    claim, job = rendered_pair()
    result = status.compute(
        md,
        status.Observed(
            pods=[pod_of(deployment, "iris-x")], caches={name_of(): (bound(claim), finished(job))}
        ),
        {},
        NOW,
    )
    assert result["servedDigest"] == V1


# --- the executor ---------------------------------------------------------------------------------


def test_the_executor_fills_the_cache_then_creates_the_deployment_and_restarts_make_no_second_job() -> None:
    kube = MemoryKube()
    kube.secrets[("ml", "s3-credentials")] = AWS_KEYS
    kube.create_md(md_body())
    name = name_of()
    first = run(controller(kube))
    assert first.applied == (
        "NetworkPolicy/iris",
        f"PersistentVolumeClaim/{name}",
        f"Job/{name}",
        "Service/iris",
        "PodDisruptionBudget/iris",
    )
    kube.edit("PersistentVolumeClaim", "ml", name, lambda o: o.update(bound(o)))
    kube.edit("Job", "ml", name, lambda o: o.update(finished(o)))
    restarted = controller(kube)  # a new operator process: nothing remembered but what the API holds
    assert run(restarted).applied == ("Deployment/iris",)
    assert [key for key in kube.objects if key[0] == "Job"] == [("Job", "ml", name)]
    assert run(restarted).applied == ()


def test_the_executor_shows_the_fill_pods_bytes_from_the_watch_and_then_writes_nothing() -> None:
    """The fill Job's pod comes through the pod watch (no read of its own), apart from the model's
    pods; its pull's bytes are written to status once, and a steady state writes nothing."""
    kube = MemoryKube()
    kube.secrets[("ml", "s3-credentials")] = AWS_KEYS
    kube.create_md(md_body())
    name = name_of()
    ctl = controller(kube)
    run(ctl)
    kube.edit("PersistentVolumeClaim", "ml", name, lambda o: o.update(bound(o)))
    job = kube.objects[("Job", "ml", name)]
    kube.objects[("Pod", "ml", f"{name}-x7k2p")] = fill_pod(job, pulled())
    view = kube.snapshot(("ml", "iris"))
    assert [p["metadata"]["name"] for p in view.fill_pods] == [f"{name}-x7k2p"]
    assert view.pods == []  # no model pod: it is not counted, nor asked why it is not Ready
    kube.edit("Job", "ml", name, lambda o: o.update(finished(o)))
    kube.calls.clear()
    assert run(ctl).applied == ("Deployment/iris",)
    assert not [call for call in kube.calls if call[1] == "Pod"]  # never read: the watch shows it
    [cache] = kube.objects[("ModelDeployment", "ml", "iris")]["status"]["caches"]
    assert cache["bytes"] == ARTIFACT_BYTES
    kube.calls.clear()
    run(ctl)
    assert kube.writes() == []


def test_the_watch_keys_a_fill_pod_under_its_model_and_snapshots_keep_it_apart() -> None:
    _, job = rendered_pair()
    pod = fill_pod(job, pulled())
    store = Store()
    store.update("Pod", "ADDED", pod)
    assert store.snapshot(("ml", "iris")).objects == (pod,)
    model_pod = pod_of(render.children(parsed(), SETTINGS)[2], "iris-x")
    snapshot = Snapshot(objects=(pod, model_pod))
    assert snapshot.pods == [model_pod]
    assert snapshot.fill_pods == [pod]
    assert snapshot.children == {}


@pytest.mark.parametrize("case", ["gguf", "vllm", "tensorflow", "sklearn-s3"])
def test_every_format_pulls_in_the_job_what_its_pods_would_have_pulled(case: str) -> None:
    """The Job's container is the pod's own pull container (image, command, environment, credentials),
    and the cached pods differ from the uncached ones only in the model volume and the pull."""
    obj = body(case)
    uncached = render.children(spec.parse(obj), SETTINGS, render.Observations(secret_keys=AWS_KEYS))
    obj["spec"]["model"]["cache"] = {"size": "5Gi"}
    cached = render.children(spec.parse(obj), SETTINGS, render.Observations(secret_keys=AWS_KEYS))
    deployment = next(m for m in uncached if m["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [job] = [m for m in cached if m["kind"] == "Job"]
    [pull] = job["spec"]["template"]["spec"]["containers"]
    assert pull == pod["initContainers"][0]
    cached_pod = next(m for m in cached if m["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert "initContainers" not in cached_pod
    assert cached_pod["containers"] == pod["containers"]


NODE_PATH_ONLY = (
    'failed to provision volume with StorageClass "local-path": NodePath only supports ReadWriteOnce '
    "and ReadWriteOncePod (1.22+) access modes"
)


def test_a_claim_its_provisioner_refuses_is_a_failed_cache_with_the_provisioners_reason() -> None:
    mode = {"accessMode": "ReadWriteMany"}
    name = name_of(**mode)
    claim, job = rendered_pair(**mode)
    claim["status"] = {"phase": "Pending"}
    md = parsed(**mode)
    result = status.compute(
        md, status.Observed(caches={name: (claim, job)}, claim_failures={name: NODE_PATH_ONLY}), {}, NOW
    )
    [cache] = result["caches"]
    assert cache["state"] == status.CACHE_FAILED
    assert "NodePath only supports ReadWriteOnce" in cache["message"]
    assert "storage class local-path" in cache["message"]
    for kind, value in (("Ready", "False"), ("Cached", "False"), ("Degraded", "True")):
        found = status.condition(result, kind)
        assert found is not None
        assert (found["status"], found["reason"]) == (value, "CacheClaimFailed"), kind


def test_a_claims_events_are_read_while_it_stays_unbound_when_it_changes_or_on_a_backoff() -> None:
    """The provisioner's refusal often comes after the claim's last change (the cold run saw that): a
    claim whose Events said nothing is asked again 5 s later, then 10 s, ...; one that changed at once."""
    kube = MemoryKube()
    kube.secrets[("ml", "s3-credentials")] = AWS_KEYS
    obj = md_body(accessMode="ReadWriteMany")
    kube.create_md(obj)
    name = name_of(accessMode="ReadWriteMany")
    clock = Clock()
    ctl = controller(kube, clock)

    def reads() -> int:
        return len([c for c in kube.calls if c == ("list", "Event", name)])

    run(ctl)  # the claim and Job are made
    assert reads() == 0
    outcome = run(ctl)  # they are unbound: their Events are read (none yet)
    assert reads() == 1
    assert outcome.recheck_in == pytest.approx(5.0)  # asked again then, even if nothing changes
    kube.provisioning_failures[("ml", name)] = NODE_PATH_ONLY
    clock.now += 4.9
    run(ctl)
    assert reads() == 1  # neither the claim changed nor is the next read due
    clock.now += 0.1
    run(ctl)
    assert reads() == 2  # due: the refusal is found without any change of the claim
    md_status = kube.objects[("ModelDeployment", "ml", "iris")]["status"]
    assert md_status["caches"][0]["state"] == status.CACHE_FAILED
    clock.now += 600
    run(ctl)
    assert reads() == 2  # an answer is kept until the claim changes
    kube.edit("PersistentVolumeClaim", "ml", name, lambda o: o.update(status={"phase": "Pending"}))
    run(ctl)
    assert reads() == 3
    kube.edit("PersistentVolumeClaim", "ml", name, lambda o: o.update(bound(o)))
    kube.calls.clear()
    assert run(ctl).recheck_in is None
    assert reads() == 0  # bound: nothing to ask


def test_a_silent_claim_is_asked_again_less_and_less_often() -> None:
    kube = MemoryKube()
    kube.secrets[("ml", "s3-credentials")] = AWS_KEYS
    kube.create_md(md_body(accessMode="ReadWriteMany"))
    clock = Clock()
    ctl = controller(kube, clock)
    run(ctl)
    delays = []
    for _ in range(8):
        outcome = run(ctl)
        delays.append(outcome.recheck_in)
        clock.now += outcome.recheck_in
    assert delays == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]


def test_events_that_cannot_be_read_leave_the_cache_pending_and_the_reconcile_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An Event is informative: an operator whose RBAC lacks events list still reconciles."""
    kube = MemoryKube()
    kube.secrets[("ml", "s3-credentials")] = AWS_KEYS
    kube.create_md(md_body(accessMode="ReadWriteMany"))

    def refused(namespace: str, claim: str) -> str | None:
        raise KubeError("list", f"Events of {claim}", ApiException(status=403, reason="Forbidden"))

    monkeypatch.setattr(kube, "provisioning_failure", refused)
    ctl = controller(kube)
    run(ctl)
    assert run(ctl).result == "ok"
    md_status = kube.objects[("ModelDeployment", "ml", "iris")]["status"]
    assert md_status["caches"][0]["state"] == status.CACHE_PENDING
