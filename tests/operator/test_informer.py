"""The informers and their store against the in-memory stand-in at the Kube seam: the first LIST seeds
the store, watch events update it and queue the ModelDeployment concerned, a relist replaces it whole,
410 Gone relists, a dropped connection watches on, the gate holds reconciles until every first LIST
is in, a kind whose CRD comes later is unknown until its own first LIST, and a start is linear in the
objects. Informers are stepped by the test (no threads), except where the controller's gate is run."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from modelplane import children, informer
from modelplane import spec as specs
from modelplane.cache import Cache, Key
from modelplane.config import Config
from modelplane.informer import Informer, Store, Watches
from modelplane.reconcile import Controller, Reconciler
from modelplane.render.common import LABEL_MANAGED_BY, LABEL_NAME, MANAGED_BY
from modelplane.workqueue import Backoff

from tests.operator.memory_kube import MemoryKube
from tests.operator.test_reconcile import KEY, NOW, controller, md_body, run
from tests.operator.test_render import AWS_KEYS, SETTINGS

NO_WAIT = Backoff(0.0, 0.0)
ALWAYS_SERVED = [w for w in informer.WATCHED if w.requires_crd is None]


class Recorder:
    """What the watches asked for: the keys queued, the resyncs, the children's deletions heard."""

    def __init__(self) -> None:
        self.queued: list[Key] = []
        self.resyncs = 0
        self.deletions: list[tuple[Key, str, str, str]] = []
        self.peerings: list[list[Any]] = []

    def resync(self) -> None:
        self.resyncs += 1

    def deleted(self, key: Key, kind: str, name: str, uid: str) -> None:
        self.deletions.append((key, kind, name, uid))


def watches(
    kube: MemoryKube, namespaces: tuple[str, ...] = (), peering_name: str = ""
) -> tuple[Watches, Recorder]:
    heard = Recorder()
    found = Watches(
        kube,
        Store(),
        namespaces,
        queue=heard.queued.append,
        resync=heard.resync,
        deleted=heard.deleted,
        peering_name=peering_name,
        peers=heard.peerings.append,
        spawn=lambda _: None,  # the test steps each informer itself
        backoff=NO_WAIT,
    )
    found.start()
    return found, heard


def of_kind(found: Watches, kind: str) -> Informer:
    [one] = [i for i in found.informers if i.watched.kind == kind]
    return one


def list_all(found: Watches) -> None:
    """Every informer's first LIST, those that the CRDs' listing starts included."""
    while pending := [i for i in found.informers if not i.has_listed]:
        for one in pending:
            one.step()


def watch_all(found: Watches) -> None:
    for one in found.informers:
        one.step()


@pytest.fixture
def kube() -> MemoryKube:
    kube = MemoryKube()
    kube.secrets[("ml", "s3-credentials")] = AWS_KEYS
    return kube


@pytest.fixture
def deployed(kube: MemoryKube) -> MemoryKube:
    """One ModelDeployment and its children, applied by the reconciler, and a pod of it."""
    kube.create_md(md_body())
    run(controller(kube))
    kube.add_pod("ml", "iris", "iris-abc")
    return kube


def names(found: Watches, key: Key = KEY) -> set[tuple[str, str]]:
    view = found.store.snapshot(key)
    return {(o["kind"], o["metadata"]["name"]) for o in view.objects}


def test_the_first_list_seeds_the_store_as_the_api_holds_it(deployed: MemoryKube) -> None:
    found, heard = watches(deployed)
    list_all(found)
    view = found.store.snapshot(KEY)
    assert view.body is not None
    assert view.body["metadata"]["uid"] == deployed.objects[(specs.KIND, "ml", "iris")]["metadata"]["uid"]
    assert names(found) == {
        (o["kind"], o["metadata"]["name"]) for o in deployed.snapshot(KEY).objects
    }  # every child and the pod, under the model's key, with the kind a LIST leaves out
    assert ("Pod", "iris-abc") in names(found)
    assert found.store.model_deployments() == [KEY]
    assert heard.queued == []  # the gate's resync queues every ModelDeployment, not each object


def test_a_watch_event_updates_the_store_and_queues_its_model(deployed: MemoryKube) -> None:
    found, heard = watches(deployed)
    list_all(found)
    deployed.edit("Deployment", "ml", "iris", lambda o: o["spec"].update(replicas=5))
    deployed.add_pod("ml", "iris", "iris-def")
    watch_all(found)
    view = found.store.snapshot(KEY)
    assert view.children[("Deployment", "iris")]["spec"]["replicas"] == 5
    assert ("Pod", "iris-def") in names(found)
    assert heard.queued == [KEY, KEY]


def test_a_deleted_event_removes_the_object_and_is_heard_by_the_cache(deployed: MemoryKube) -> None:
    found, heard = watches(deployed)
    list_all(found)
    uid = deployed.objects[("Service", "ml", "iris")]["metadata"]["uid"]
    deployed.remove("Service", "ml", "iris")
    watch_all(found)
    assert ("Service", "iris") not in names(found)
    assert heard.deletions == [(KEY, "Service", "iris", uid)]
    assert heard.queued == [KEY]


def test_the_deleted_event_of_a_replaced_namesake_keeps_the_new_one() -> None:
    store = Store()
    old = {"kind": "Service", "metadata": {"name": "s", "namespace": "ml", "uid": "1", "labels": {}}}
    new = {"kind": "Service", "metadata": {"name": "s", "namespace": "ml", "uid": "2", "labels": {}}}
    store.update("Service", "ADDED", old)
    store.update("Service", "ADDED", new)
    assert store.update("Service", "DELETED", old) is None
    assert store.replace("Service", None, [new]) == []  # held as it is listed: no change


def test_an_update_keeps_the_order_of_a_model_s_objects(deployed: MemoryKube) -> None:
    """Status reads pods in this order: an event must not reorder them (a message would flip)."""
    deployed.add_pod("ml", "iris", "iris-def")
    found, _ = watches(deployed)
    list_all(found)
    before = [o["metadata"]["name"] for o in found.store.snapshot(KEY).objects]
    deployed.edit("Pod", "ml", "iris-abc", lambda o: o["status"].update(phase="Running"))
    watch_all(found)
    of_kind(found, "Pod").list()  # a relist too
    assert [o["metadata"]["name"] for o in found.store.snapshot(KEY).objects] == before


def test_an_object_that_loses_our_label_leaves_the_store(deployed: MemoryKube) -> None:
    found, heard = watches(deployed)
    list_all(found)
    uid = deployed.objects[("Pod", "ml", "iris-abc")]["metadata"]["uid"]
    deployed.edit("Pod", "ml", "iris-abc", lambda o: o["metadata"]["labels"].pop(LABEL_NAME))
    watch_all(found)
    assert ("Pod", "iris-abc") not in names(found)
    assert heard.deletions == [(KEY, "Pod", "iris-abc", uid)]  # its model hears of it
    assert heard.queued == [KEY]


def test_a_relist_replaces_the_store_whole_so_no_ghost_survives(deployed: MemoryKube) -> None:
    """What was deleted while the watch was down is gone after the relist, and handled as a deletion;
    what changed meanwhile queues its model too."""
    found, heard = watches(deployed)
    list_all(found)
    services = of_kind(found, "Service")
    uid = deployed.objects[("Service", "ml", "iris")]["metadata"]["uid"]
    deployed.remove("Service", "ml", "iris")
    deployed.compact()  # and etcd forgot it: the watch cannot tell
    services.step()  # 410 Gone
    assert services.resource_version is None
    assert ("Service", "iris") in names(found)  # not yet relisted
    services.step()
    assert ("Service", "iris") not in names(found)
    assert heard.deletions == [(KEY, "Service", "iris", uid)]
    assert heard.queued == [KEY]


def test_410_gone_lists_again_and_a_dropped_connection_watches_on(deployed: MemoryKube) -> None:
    found, _ = watches(deployed)
    list_all(found)
    pods = of_kind(found, "Pod")
    lists = [c for c in deployed.calls if c[:2] == ("list", "Pod")]
    deployed.broken_watches = 1
    pods.step()  # connection reset: the next step watches from the same resourceVersion
    assert pods.resource_version is not None
    deployed.add_pod("ml", "iris", "iris-def")
    pods.step()
    assert ("Pod", "iris-def") in names(found)
    assert [c for c in deployed.calls if c[:2] == ("list", "Pod")] == lists  # no relist
    deployed.add_pod("ml", "iris", "iris-ghi")
    deployed.compact()
    pods.step()  # the resourceVersion is too old: 410
    pods.step()
    assert ("Pod", "iris-ghi") in names(found)
    assert len([c for c in deployed.calls if c[:2] == ("list", "Pod")]) == len(lists) + 1


def test_the_gate_holds_until_every_informer_started_at_startup_has_listed(deployed: MemoryKube) -> None:
    deployed.install_crd(children.KEDA_CRD)  # established at startup: its kind is waited for too
    found, _ = watches(deployed)
    for one in found.informers:
        assert not found.wait_synced(timeout=0)
        one.step()
    assert not found.wait_synced(timeout=0)  # the CRDs' listing started the ScaledObject informer
    of_kind(found, "ScaledObject").step()
    assert found.wait_synced(timeout=0)
    assert children.KEDA_CRD in found.store.snapshot(KEY).crds


def test_no_reconcile_runs_before_the_gate_opens(deployed: MemoryKube) -> None:
    """The controller's workers start when the last first LIST is in, and then every model is queued;
    a restart over objects as the operator left them writes nothing."""
    deployed.calls.clear()
    found, _ = watches(deployed)
    settings = Config(render=SETTINGS, peering_name="")
    reconciler = Reconciler(deployed, settings, Cache(found.store.snapshot), clock=lambda: NOW)
    ctl = Controller(reconciler, settings, found.store.model_deployments)
    reconciled = threading.Event()
    reconcile = reconciler.reconcile

    def counted(namespace: str, name: str) -> Any:
        reconciled.set()
        return reconcile(namespace, name)

    reconciler.reconcile = counted  # type: ignore[method-assign]
    ctl.queue.add(KEY)  # an event before the gate: held, not reconciled
    ctl.start(ready=found.wait_synced)
    try:
        *first, last = found.informers
        for one in first:
            one.step()
        assert not reconciled.is_set()
        last.step()
        assert reconciled.wait(timeout=30)
    finally:
        found.stop()
        ctl.stop()
    assert deployed.writes() == []


def test_a_kind_whose_crd_comes_later_is_unknown_until_its_first_list(deployed: MemoryKube) -> None:
    found, heard = watches(deployed)
    list_all(found)
    assert found.wait_synced(timeout=0)
    assert "ScaledObject" not in {i.watched.kind for i in found.informers}
    deployed.install_crd(children.KEDA_CRD, established=False)
    watch_all(found)
    assert "ScaledObject" not in {i.watched.kind for i in found.informers}
    deployed.install_crd(children.KEDA_CRD)
    of_kind(found, informer.CRD_KIND).step()
    scaled_objects = of_kind(found, "ScaledObject")
    assert children.KEDA_CRD not in found.store.snapshot(KEY).crds  # established, not listed yet
    assert heard.resyncs == 0
    scaled_objects.step()
    assert children.KEDA_CRD in found.store.snapshot(KEY).crds
    assert heard.resyncs == 1  # every model may render differently now
    deployed.remove("CustomResourceDefinition", "", children.KEDA_CRD)
    of_kind(found, informer.CRD_KIND).step()
    assert scaled_objects.stopped
    assert children.KEDA_CRD not in found.store.snapshot(KEY).crds
    assert heard.resyncs == 2


def test_a_crd_s_store_entry_keeps_only_whether_it_is_established(kube: MemoryKube) -> None:
    kube.install_crd(children.KEDA_CRD)
    kube.install_crd("unrelated.example.com")
    found, _ = watches(kube)
    of_kind(found, informer.CRD_KIND).step()
    assert found.store.established(children.KEDA_CRD)
    assert not found.store.established("unrelated.example.com")


def test_with_watch_namespaces_each_namespace_has_its_informer(deployed: MemoryKube) -> None:
    found, _ = watches(deployed, ("ml", "other"))
    services = [i for i in found.informers if i.watched.kind == "Service"]
    assert sorted(str(i.namespace) for i in services) == ["ml", "other"]
    assert of_kind(found, informer.CRD_KIND).namespace is None  # cluster-scoped
    list_all(found)
    assert found.wait_synced(timeout=0)
    assert ("Service", "iris") in names(found)


def test_the_peering_object_is_read_before_the_gate_opens_and_at_each_change(kube: MemoryKube) -> None:
    """The controller learns whether kopf pauses it from the same object kopf reads."""
    peering = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "status": {"a": {"priority": 1}}}
    peering["metadata"] = {"name": "modelplane", "uid": "p", "resourceVersion": "1"}
    kube.objects[("ClusterKopfPeering", "", "modelplane")] = peering
    kube.objects[("ClusterKopfPeering", "", "another")] = {**peering, "metadata": {"name": "another"}}
    found, heard = watches(kube, peering_name="modelplane")
    peerings = of_kind(found, "ClusterKopfPeering")
    peerings.step()
    assert [[p["status"] for p in told] for told in heard.peerings] == [[{"a": {"priority": 1}}]]
    kube.edit("ClusterKopfPeering", "", "modelplane", lambda o: o["status"].update(b={"priority": 2}))
    peerings.step()
    assert heard.peerings[-1][0]["status"] == {"a": {"priority": 1}, "b": {"priority": 2}}
    assert ("kopf.dev", "kopfpeerings") in informer.resources(("team-a",))


def many(kube: MemoryKube, count: int) -> None:
    """COUNT ModelDeployments, each with a Deployment and two pods (labelled as ours)."""
    for number in range(count):
        name = f"m{number}"
        body = md_body()
        body["metadata"]["name"] = name
        kube.create_md(body)
        labels = {LABEL_NAME: name, LABEL_MANAGED_BY: MANAGED_BY}
        kube.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": "ml", "labels": labels},
                "spec": {"replicas": 2},
            }
        )
        for pod in range(2):
            kube.add_pod("ml", name, f"{name}-{pod}")


def start_with(count: int) -> tuple[int, int]:
    """Start the watches over COUNT ModelDeployments: (gate signals, LISTs made) until the gate opened."""
    kube = MemoryKube()
    kube.page_size = 10 * count  # every LIST one page here (paging: the test below)
    many(kube, count)
    found, heard = watches(kube)
    list_all(found)
    assert found.wait_synced(timeout=0)
    assert heard.queued == []  # no per-object work queued: the gate's resync queues each model once
    assert len(found.store.model_deployments()) == count
    assert all(len(found.store.snapshot(key).objects) == 3 for key in found.store.model_deployments())
    return found.gate_signals, len([c for c in kube.calls if c[0] == "list"])


def test_a_start_is_linear_in_the_objects() -> None:
    """One LIST per kind and one gate signal per informer, whatever the number of objects (kopf's
    index gate woke every object's waiter at every object's toggle: quadratic); every object is held."""
    few, lots = start_with(10), start_with(300)
    assert few == lots == (len(ALWAYS_SERVED), len(ALWAYS_SERVED))


def test_a_list_comes_in_pages_and_the_store_holds_every_page() -> None:
    kube = MemoryKube()
    kube.page_size = 2
    many(kube, 3)  # 3 Deployments and 6 pods
    found, _ = watches(kube)
    list_all(found)
    assert len([c for c in kube.calls if c == ("list", "Pod", "")]) == 3
    assert all(len(found.store.snapshot(key).objects) == 3 for key in found.store.model_deployments())
