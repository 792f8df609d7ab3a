"""The executor and the controller loop against the in-memory stand-in at the Kube seam."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from modelplane import cache, children, plan
from modelplane.cache import Cache
from modelplane.config import Config
from modelplane.reconcile import Controller, Reconciler
from modelplane.workqueue import Backoff, WorkQueue

from tests.operator.memory_kube import MemoryKube
from tests.operator.test_render import AWS_KEYS, GOLDEN, SETTINGS

NOW = datetime(2026, 11, 23, 20, 0, 0, tzinfo=UTC)
KEY = ("ml", "iris")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def md_body(case: str = "sklearn-s3", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((GOLDEN / f"{case}.input.yaml").read_text())
    body["spec"].update(changes)
    return body


@pytest.fixture
def kube() -> MemoryKube:
    kube = MemoryKube()
    kube.secrets[("ml", "s3-credentials")] = AWS_KEYS
    return kube


def controller(
    kube: MemoryKube, clock: Clock | None = None, *, observed: Cache | None = None, **config: Any
) -> Controller:
    clock = clock or Clock()
    settings = Config(render=SETTINGS, peering_name="", **config)
    observed = observed or Cache(kube.snapshot, clock)
    reconciler = Reconciler(kube, settings, observed, clock=lambda: NOW, monotonic=clock)
    queue: WorkQueue[tuple[str, str]] = WorkQueue("test", Backoff(1.0, 8.0, rand=lambda: 0.0), clock)
    return Controller(reconciler, settings, list, queue)


def run(ctl: Controller, key: tuple[str, str] = KEY) -> Any:
    ctl.enqueue(*key)
    return ctl.process_one(timeout=0)


def roll_out(kube: MemoryKube, namespace: str = "ml") -> None:
    """The Deployment controller's part: every Deployment's pods are there and Ready."""
    for (kind, ns, _), obj in list(kube.objects.items()):
        if kind == "Deployment" and ns == namespace:
            replicas = obj["spec"].get("replicas", 1)
            status = {
                "observedGeneration": obj["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
            }
            kube.edit("Deployment", ns, obj["metadata"]["name"], lambda o, s=status: o.update(status=s))


def test_create_applies_once_then_a_steady_state_makes_no_call(kube: MemoryKube) -> None:
    kube.create_md(md_body())
    ctl = controller(kube)
    outcome = run(ctl)
    assert outcome.applied == (
        "NetworkPolicy/iris",
        "Deployment/iris",
        "Service/iris",
        "PodDisruptionBudget/iris",
    )
    assert outcome.status_written
    assert [c for c in kube.calls if c[0] == "get"] == [("get", "Secret", "s3-credentials")]
    roll_out(kube)
    assert run(ctl).status_written  # Ready now
    kube.calls.clear()
    for _ in range(3):
        assert run(ctl) == run(ctl).__class__("ok")
    assert kube.calls == []  # no GET, no LIST, no write: everything came from the cache


def test_a_reconcile_right_after_an_apply_does_not_apply_again(kube: MemoryKube) -> None:
    """The watch has not delivered our own writes yet: the apply and status responses stand in."""
    kube.create_md(md_body())
    ctl = controller(kube)
    kube.lag()  # the watches still show the cluster before the first reconcile
    run(ctl)
    writes = kube.writes()
    assert ("apply", "Deployment", "iris") in writes
    run(ctl)
    assert kube.writes() == writes
    kube.catch_up()
    run(ctl)
    assert kube.writes() == writes


def test_a_child_deleted_before_its_watch_ever_showed_it_is_recreated_without_an_event(
    kube: MemoryKube,
) -> None:
    """A kind whose CRD arrived after the operator started: kopf lists it only once the API serves it,
    after our apply and after the delete, so the watch shows neither and sends no event. Our write is
    read by name once it is due, and the deletion repaired then (not at the resync)."""
    clock = Clock()
    kube.secrets[("ml", "gcs")] = frozenset()
    kube.create_md(md_body("autoscaling-concurrency"))
    kube.crds.add(children.KEDA_CRD)
    ctl = controller(kube, clock)
    key = ("ml", "busy")
    kube.lag()  # the ScaledObject watch has not listed yet
    outcome = run(ctl, key)
    assert "ScaledObject/busy" in outcome.applied
    assert outcome.recheck_in == cache.CONFIRM_SECONDS
    del kube.objects[("ScaledObject", "ml", "busy")]  # deleted by hand
    kube.catch_up()  # the first listing: every other child, no ScaledObject, no event for it
    assert run(ctl, key).applied == ()  # not due yet: our write stands in for the late watch
    assert ("get", "ScaledObject", "busy") not in kube.calls
    clock.now += cache.CONFIRM_SECONDS
    kube.calls.clear()
    outcome = ctl.process_one(timeout=0)  # the recheck comes due on its own
    assert outcome is not None
    assert outcome.applied == ("ScaledObject/busy",)
    assert [c for c in kube.calls if c[0] == "get"] == [("get", "ScaledObject", "busy")]


def test_a_write_the_watch_shows_in_time_is_never_read_again(kube: MemoryKube) -> None:
    clock = Clock()
    kube.create_md(md_body())
    ctl = controller(kube, clock)
    kube.lag()
    assert run(ctl).recheck_in == cache.CONFIRM_SECONDS
    kube.catch_up()  # the watch delivers our writes
    clock.now += cache.CONFIRM_SECONDS
    kube.calls.clear()
    outcome = ctl.process_one(timeout=0)  # the recheck: no event needed, no call made
    assert outcome is not None
    assert outcome.recheck_in is None
    assert kube.calls == []
    assert ctl.process_one(timeout=0) is None  # and nothing is queued after it


def test_a_watch_later_than_the_confirm_window_costs_one_get_per_child_and_no_write(
    kube: MemoryKube,
) -> None:
    clock = Clock()
    kube.create_md(md_body())
    ctl = controller(kube, clock)
    kube.lag()
    run(ctl)
    clock.now += cache.CONFIRM_SECONDS
    kube.calls.clear()
    outcome = ctl.process_one(timeout=0)
    assert outcome is not None
    assert outcome.applied == ()
    assert sorted(kube.calls) == [
        ("get", k, "iris") for k in ("Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service")
    ]
    assert outcome.recheck_in == cache.CONFIRM_SECONDS  # still unseen: asked again later, not hammered
    assert ctl.process_one(timeout=0) is None


def test_the_deleted_event_of_a_child_just_written_repairs_it_at_once(kube: MemoryKube) -> None:
    """kopf folds the events of one object that come close together: the watch may show the
    Deployment we created only as its DELETED event, never at our resourceVersion."""
    clock = Clock()
    observed = Cache(kube.snapshot, clock)
    kube.create_md(md_body())
    ctl = controller(kube, clock, observed=observed)
    kube.lag()
    run(ctl)
    deployment = kube.objects.pop(("Deployment", "ml", "iris"))
    kube.catch_up()
    observed.watched_deletion(KEY, "Deployment", "iris", deployment["metadata"]["uid"])
    kube.calls.clear()
    assert run(ctl).applied == ("Deployment/iris",)
    assert [c for c in kube.calls if c[0] == "get"] == []


def test_a_child_event_reads_no_secret_but_a_new_generation_does(kube: MemoryKube) -> None:
    kube.create_md(md_body())
    ctl = controller(kube)
    run(ctl)

    def secret_gets() -> list[tuple[str, str, str]]:
        return [c for c in kube.calls if c == ("get", "Secret", "s3-credentials")]

    kube.add_pod("ml", "iris", "iris-abc")  # a child event
    run(ctl)
    assert len(secret_gets()) == 1
    kube.update_spec("ml", "iris", replicas=3)
    run(ctl)
    assert len(secret_gets()) == 2


def test_a_missing_secret_is_read_again_until_it_exists(kube: MemoryKube) -> None:
    del kube.secrets[("ml", "s3-credentials")]
    kube.create_md(md_body())
    ctl = controller(kube)
    run(ctl)
    md = kube.objects[("ModelDeployment", "ml", "iris")]
    assert md["status"]["conditions"][0]["reason"] == "CredentialsSecretNotFound"
    kube.secrets[("ml", "s3-credentials")] = AWS_KEYS
    run(ctl)
    assert md["status"]["conditions"][0]["reason"] != "CredentialsSecretNotFound"


def test_the_secret_is_read_again_after_a_resync_interval(kube: MemoryKube) -> None:
    clock = Clock()
    kube.create_md(md_body())
    ctl = controller(kube, clock, resync_seconds=600)
    run(ctl)
    clock.now += 601
    run(ctl)
    assert kube.calls.count(("get", "Secret", "s3-credentials")) == 2


def test_deleted_and_edited_children_are_put_back(kube: MemoryKube) -> None:
    kube.create_md(md_body())
    ctl = controller(kube)
    run(ctl)
    roll_out(kube)
    run(ctl)
    del kube.objects[("Service", "ml", "iris")]
    assert run(ctl).applied == ("Service/iris",)
    kube.edit(
        "Deployment",
        "ml",
        "iris",
        lambda o: o["spec"]["template"]["spec"]["containers"][0].update(image="nginx"),
    )
    assert run(ctl).applied == ("Deployment/iris",)
    assert (
        kube.objects[("Deployment", "ml", "iris")]["spec"]["template"]["spec"]["containers"][0]["image"]
        != "nginx"
    )


def test_what_the_spec_no_longer_asks_for_is_pruned_exactly_once(kube: MemoryKube) -> None:
    kube.create_md(md_body())
    ctl = controller(kube)
    run(ctl)
    kube.update_spec("ml", "iris", replicas=1)
    kube.lag()
    assert run(ctl).pruned == ("PodDisruptionBudget/iris",)
    assert ("PodDisruptionBudget", "ml", "iris") not in kube.objects
    run(ctl)  # the watch still shows it: our delete stands in
    assert kube.calls.count(("delete", "PodDisruptionBudget", "iris")) == 1


@pytest.mark.parametrize("code", [400, 403, 422])
def test_a_refusal_for_good_is_written_as_apply_failed_and_not_retried(kube: MemoryKube, code: int) -> None:
    kube.create_md(md_body())
    kube.refuse[("Deployment", "iris")] = code
    ctl = controller(kube)
    outcome = run(ctl)
    assert outcome.result == "refused"
    md = kube.objects[("ModelDeployment", "ml", "iris")]
    ready = md["status"]["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "ApplyFailed")
    assert str(code) in ready["message"]
    assert [e[1] for e in kube.events] == ["ApplyFailed"]
    assert ctl.queue.failures(KEY) == 0
    assert ctl.queue.get(timeout=0) is None
    # A change (here: the quota raised) and the next event or resync fix it.
    del kube.refuse[("Deployment", "iris")]
    assert run(ctl).applied[0] == "Deployment/iris"


def test_in_a_namespace_being_deleted_nothing_is_recreated_or_retried(kube: MemoryKube) -> None:
    kube.create_md(md_body())
    ctl = controller(kube)
    roll_out(kube)
    assert run(ctl).result == "ok"
    # The namespace controller deletes the children before the ModelDeployment itself.
    kube.terminating.add("ml")
    del kube.objects[("PodDisruptionBudget", "ml", "iris")]
    kube.calls.clear()
    assert run(ctl).result == "gone"
    assert kube.calls == [("apply", "PodDisruptionBudget", "iris")]  # refused once; no status, no Event
    assert ctl.queue.failures(KEY) == 0
    kube.calls.clear()
    del kube.objects[("Service", "ml", "iris")]
    assert run(ctl).result == "gone"  # every later child event of its teardown: no call at all
    assert kube.calls == []


@pytest.mark.parametrize("code", [409, 429, 500, 503])
def test_a_passing_failure_is_retried_with_backoff(kube: MemoryKube, code: int) -> None:
    clock = Clock()
    kube.create_md(md_body())
    kube.refuse[("Deployment", "iris")] = code
    ctl = controller(kube, clock)
    assert run(ctl) is None
    assert "status" not in kube.objects[("ModelDeployment", "ml", "iris")]  # nothing to tell users yet
    assert ctl.queue.failures(KEY) == 1
    assert ctl.queue.get(timeout=0) is None  # not before its backoff
    clock.now += 1.0
    assert ctl.process_one(timeout=0) is None  # due: retried, fails again
    assert ctl.queue.failures(KEY) == 2
    clock.now += 1.9
    assert ctl.queue.get(timeout=0) is None  # the second wait is twice as long
    del kube.refuse[("Deployment", "iris")]
    clock.now += 0.1
    assert ctl.process_one(timeout=0) is not None
    assert ctl.queue.failures(KEY) == 0  # success resets the backoff


def test_status_is_written_only_on_change_and_events_only_on_transitions(kube: MemoryKube) -> None:
    kube.create_md(md_body())
    ctl = controller(kube)
    run(ctl)
    assert [e[1] for e in kube.events] == ["RolloutInProgress"]  # status as of after the applies
    patches = kube.calls.count(("patch", "ModelDeployment", "iris"))
    run(ctl)
    assert kube.calls.count(("patch", "ModelDeployment", "iris")) == patches
    roll_out(kube)
    run(ctl)
    run(ctl)
    assert [e[1] for e in kube.events] == ["RolloutInProgress", "AllReplicasReady"]
    assert kube.calls.count(("patch", "ModelDeployment", "iris")) == patches + 1


def test_an_invalid_spec_is_reported_once_and_nothing_is_applied(kube: MemoryKube) -> None:
    kube.create_md(md_body(model={"uri": "ftp://x", "format": "sklearn"}))
    ctl = controller(kube)
    assert run(ctl).result == "invalid"
    assert run(ctl).result == "invalid"
    assert kube.writes() == [("patch", "ModelDeployment", "iris"), ("create", "Event", "iris")]


def test_scaled_object_once_the_keda_crd_is_installed(kube: MemoryKube) -> None:
    kube.secrets[("ml", "gcs")] = frozenset()
    kube.create_md(md_body("autoscaling-concurrency"))
    ctl = controller(kube)
    key = ("ml", "busy")
    assert "ScaledObject/busy" not in run(ctl, key).applied
    kube.crds.add(children.KEDA_CRD)
    assert "ScaledObject/busy" in run(ctl, key).applied


def test_a_deleted_model_deployment_is_forgotten(kube: MemoryKube) -> None:
    kube.create_md(md_body())
    ctl = controller(kube)
    run(ctl)
    del kube.objects[("ModelDeployment", "ml", "iris")]
    kube.calls.clear()
    assert run(ctl).result == "gone"
    assert kube.calls == []  # the garbage collector deletes the children


def test_one_key_is_never_reconciled_twice_at_once(kube: MemoryKube) -> None:
    kube.create_md(md_body())
    ctl = controller(kube)
    ctl.enqueue(*KEY)
    key = ctl.queue.get(timeout=0)
    ctl.enqueue(*KEY)  # an event while it is being reconciled
    ctl.enqueue(*KEY)
    assert ctl.queue.get(timeout=0) is None  # held back while processing...
    assert key is not None
    ctl.queue.done(key)
    assert ctl.queue.get(timeout=0) == KEY  # ...then once
    ctl.queue.done(KEY)
    assert ctl.queue.get(timeout=0) is None


def test_plan_and_executor_agree_on_the_applied_order(kube: MemoryKube) -> None:
    kube.create_md(md_body("canary-ready"))
    run(controller(kube))
    applied = [c[1] for c in kube.calls if c[0] == "apply"]
    assert applied == sorted(applied, key=children.apply_order)
    assert plan.Plan().apply == ()


def peering(*peers: tuple[int, datetime], ids: tuple[str, ...] = ()) -> dict[str, Any]:
    """kopf's peering object with PEERS (priority, lastseen), each alive for 60 s from then, under IDS
    (peer-0, peer-1, ... where not given)."""
    names = ids or tuple(f"peer-{n}" for n in range(len(peers)))
    status = {
        name: {"priority": priority, "lifetime": 60, "lastseen": seen.isoformat()}
        for name, (priority, seen) in zip(names, peers, strict=True)
    }
    return {"metadata": {"name": "modelplane"}, "status": status}


def test_an_operator_in_several_peering_objects_does_not_pause_for_itself(
    kube: MemoryKube,
) -> None:
    """Watching several namespaces, kopf keeps a peering object in each, every one naming this operator
    under its one id: that is one peer (it paused the chart's operator for good before), and another
    operator of the same priority in any of them still pauses it."""
    settings = Config(render=SETTINGS, peering_priority=10)
    reconciler = Reconciler(kube, settings, Cache(kube.snapshot), clock=lambda: NOW)
    queue: WorkQueue[tuple[str, str]] = WorkQueue("namespaces", Backoff(1.0, 8.0, rand=lambda: 0.0))
    ctl = Controller(reconciler, settings, lambda: [KEY], queue, peered=True, wall_clock=lambda: NOW)
    later = NOW + timedelta(seconds=5)
    ctl.peers_changed([peering((10, NOW), ids=("us",)), peering((10, later), ids=("us",))])
    assert not ctl.paused
    ctl.peers_changed([peering((10, NOW), ids=("us",)), peering((10, later), (10, NOW), ids=("us", "them"))])
    assert ctl.paused


def test_a_paused_operator_neither_reconciles_nor_resyncs(kube: MemoryKube) -> None:
    """With peering, kopf pauses this operator while a live peer has a higher priority: the controller
    reads the same peering object and pauses by the same rule. The watches keep queueing keys meanwhile;
    they are dropped, and resuming queues every key."""
    now = [NOW]
    kube.create_md(md_body())
    settings = Config(render=SETTINGS, peering_priority=10)
    reconciler = Reconciler(kube, settings, Cache(kube.snapshot), clock=lambda: NOW)
    queue: WorkQueue[tuple[str, str]] = WorkQueue("paused", Backoff(1.0, 8.0, rand=lambda: 0.0))
    ctl = Controller(reconciler, settings, lambda: [KEY], queue, peered=True, wall_clock=lambda: now[0])
    ctl.resync()
    assert ctl.process_one(timeout=0) is None  # the peering object is not listed yet: maybe paused
    ctl.peers_changed([peering((10, NOW))])  # only ours: active, and every key is queued
    assert ctl.process_one(timeout=0) is not None
    ctl.peers_changed([peering((10, NOW), (20, NOW))])  # a peer of a higher priority came
    ctl.enqueue(*KEY)  # a watch event while paused: dropped when it comes up
    assert ctl.process_one(timeout=0) is None
    ctl.resync()
    assert ctl.queue.get(timeout=0) is None
    ctl.peers_changed([peering((10, NOW), (10, NOW))])  # another of the same priority: kopf pauses both
    assert ctl.paused
    now[0] = NOW + timedelta(seconds=61)  # the other's lifetime passed (kopf touches ours then)
    ctl.peers_changed([peering((10, now[0]), (20, NOW))])
    assert ctl.process_one(timeout=0) is not None  # resumed: every key queued again
