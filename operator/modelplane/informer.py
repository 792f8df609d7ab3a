"""The watch-fed cache: an informer per watched kind, as client-go's are, and the store they fill.

An informer LISTs its kind (server-side filtered by our label, as kopf's watches were) to fill its part
of the store and learn the list's resourceVersion, then WATCHes from there, with bookmarks. 410 Gone or
any other API error lists again, and a list replaces the informer's part of the store whole: nothing
deleted while the watch was down survives as a ghost (its removal is handled as a DELETED event). A
lost connection (a restarted API server) watches again from the last resourceVersion after a backoff.
Every change names the ModelDeployment it concerns to the work queue (``Watches``).

The start is linear in the number of objects: each informer fills its part from one LIST and says so
once; the gate (``Watches.wait_synced``) opens when every informer started at startup has done its
first LIST, and nothing waits per object. A kind whose CRD is established later (KEDA's ScaledObject)
gets its informer then; until that informer's first LIST is in, snapshots leave the CRD out of
``Snapshot.crds``, so the reconciler treats the kind as not installed.

The reconciler's threads read snapshots built under the store's lock, so none sees a half-applied
change; ``cache.Cache`` overlays our own writes on them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from modelplane import children
from modelplane import spec as specs
from modelplane.cache import Key, Obj, Snapshot
from modelplane.kube import KubeError
from modelplane.render.cache import owner_of
from modelplane.render.common import LABEL_MANAGED_BY, MANAGED_BY
from modelplane.workqueue import Backoff

log = logging.getLogger(__name__)

OURS_SELECTOR: Final = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
CRD_KIND: Final = "CustomResourceDefinition"
WATCH_TIMEOUT_SECONDS: Final = 300  # the server ends a watch after this long; it is started again
GONE: Final = 410
DELETED: Final = "DELETED"
Raw = dict[str, Any]  # an object as the API sent it (the store trims it in place)


class ListWatch(Protocol):
    """What an informer needs of the API (kube.Kube; the in-memory stand-in in unit tests)."""

    def list_pages(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None
    ) -> Iterable[tuple[list[Raw], str]]: ...

    def watch_objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None,
        resource_version: str,
        timeout_seconds: int,
    ) -> Iterable[tuple[str, Raw]]: ...


@dataclass(frozen=True)
class WatchedKind:
    api_version: str
    kind: str
    plural: str
    label_selector: str | None = None  # None: every object of the kind
    requires_crd: str | None = None  # None: always served; else watched while that CRD is established
    namespaced: bool = True

    @property
    def group(self) -> str:
        group, _, version = self.api_version.rpartition("/")
        return group if version else ""


# What the operator watches: the ModelDeployments, every child kind by our label, the Gateways they
# name (every one: a cluster has few), and the CRDs that serve child kinds (to watch those once served).
WATCHED_CRDS: Final = children.REQUIRED_CRDS | {children.GATEWAY_CRD}
CRDS: Final = WatchedKind("apiextensions.k8s.io/v1", CRD_KIND, "customresourcedefinitions", namespaced=False)
WATCHED: Final = (
    WatchedKind(specs.API_VERSION, specs.KIND, specs.PLURAL),
    CRDS,
    *(
        WatchedKind(row.api_version, row.kind, row.plural, OURS_SELECTOR, row.requires_crd)
        for row in children.CHILD_KINDS
    ),
    *(
        WatchedKind(row.api_version, row.kind, row.plural, None, row.requires_crd)
        for row in children.REFERENCED_KINDS
    ),
)
_OWNED_KINDS: Final = frozenset(row.kind for row in children.CHILD_KINDS)
PEERING_KINDS: Final = frozenset({"KopfPeering", "ClusterKopfPeering"})


def peering(namespaces: tuple[str, ...]) -> WatchedKind:
    """kopf's peering objects (which of several operators is active): one per namespace watched, or
    one for the cluster."""
    if namespaces:
        return WatchedKind("kopf.dev/v1", "KopfPeering", "kopfpeerings")
    return WatchedKind("kopf.dev/v1", "ClusterKopfPeering", "clusterkopfpeerings", namespaced=False)


@dataclass(frozen=True)
class Change:
    kind: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj


def _ref(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


def _uid(obj: Obj) -> str:
    return str(obj["metadata"].get("uid", ""))


def _version(obj: Obj) -> str:
    return str(obj["metadata"].get("resourceVersion", ""))


def _owner_key(kind: str, obj: Obj) -> Key | None:
    if kind not in _OWNED_KINDS:
        return None
    owner = owner_of(obj["metadata"].get("labels") or {})
    namespace = obj["metadata"].get("namespace")
    return (namespace, owner) if owner and namespace else None


class Store:
    """Every watched object by kind and (namespace, name), and the objects labelled with each
    ModelDeployment's name under its key; one lock, so a snapshot never sees a change half-made."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {}
        self._owned: dict[Key, dict[tuple[str, str], Obj]] = {}
        self._listed_crds: frozenset[str] = frozenset()  # CRDs whose kinds' informers have listed

    # Written by the informers

    def replace(self, kind: str, namespace: str | None, items: Iterable[Obj]) -> list[Change]:
        """A LIST of KIND (in NAMESPACE; None: every one) replaces what was held: the changes, what
        is gone among them as DELETED."""
        fresh = {_ref(obj): obj for obj in items}
        changes: list[Change] = []
        with self._lock:
            held = self._objects.setdefault(kind, {})
            for ref in [r for r in held if namespace is None or r[0] == namespace]:
                old, new = held[ref], fresh.get(ref)
                if new is None or _uid(new) != _uid(old):
                    del held[ref]
                    self._unindex(kind, old)
                    changes.append(Change(kind, DELETED, old))
                    continue  # a namesake made since is added below
                if _version(new) != _version(old):
                    changes.append(Change(kind, "MODIFIED", new))
                self._put(kind, ref, old, new)
            for ref, new in fresh.items():
                if ref not in held:
                    self._put(kind, ref, None, new)
                    changes.append(Change(kind, "ADDED", new))
        return changes

    def update(self, kind: str, event_type: str, obj: Obj) -> Change | None:
        """A watch event; None when it changes nothing (the DELETED of an object a namesake replaced)."""
        ref = _ref(obj)
        with self._lock:
            held = self._objects.setdefault(kind, {})
            current = held.get(ref)
            if event_type == DELETED:
                if current is None or _uid(current) != _uid(obj):
                    return None
                del held[ref]
                self._unindex(kind, current)
                return Change(kind, DELETED, current)  # as held: labelled with its model still
            self._put(kind, ref, current, obj)
        return Change(kind, event_type, obj)

    def drop(self, kind: str) -> list[Change]:
        """KIND is no longer served (its CRD went): every object of it is gone."""
        return self.replace(kind, None, ())

    def set_listed_crds(self, crds: frozenset[str]) -> None:
        """The CRDs whose kinds are listed now (in every namespace watched)."""
        with self._lock:
            self._listed_crds = crds

    # Read by the reconciler and the watches

    def snapshot(self, key: Key) -> Snapshot:
        with self._lock:
            body = self._objects.get(specs.KIND, {}).get(key)
            gateway_ref = specs.gateway_ref(body) if body is not None else None
            gateway = self._objects.get(children.GATEWAY.kind, {}).get(gateway_ref) if gateway_ref else None
            return Snapshot(
                body=body,
                objects=tuple(self._owned.get(key, {}).values()),
                crds=self._listed_crds & children.REQUIRED_CRDS,
                gateway=gateway,
            )

    def model_deployments(self) -> list[Key]:
        """Every ModelDeployment's (namespace, name)."""
        with self._lock:
            return list(self._objects.get(specs.KIND, {}))

    def naming_gateway(self, gateway: tuple[str, str]) -> list[Key]:
        """The ModelDeployments whose spec.gateway names GATEWAY."""
        with self._lock:
            bodies = list(self._objects.get(specs.KIND, {}).items())
        return [key for key, body in bodies if specs.gateway_ref(body) == gateway]

    def peerings(self, name: str) -> list[Obj]:
        """kopf's peering objects called NAME (one per namespace watched, or the cluster's)."""
        with self._lock:
            return [
                obj
                for kind in PEERING_KINDS
                for (_, found), obj in self._objects.get(kind, {}).items()
                if found == name
            ]

    def established(self, crd: str) -> bool:
        with self._lock:
            found = self._objects.get(CRD_KIND, {}).get(("", crd))
        conditions = ((found or {}).get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

    # Plumbing (called with the lock held)

    def _put(self, kind: str, ref: tuple[str, str], current: Obj | None, obj: Obj) -> None:
        """OBJ in place of CURRENT, in the same place of its model's objects (their order is the
        order status reads pods in: it must not change with every event)."""
        if current is not None and _owner_key(kind, current) != _owner_key(kind, obj):
            self._unindex(kind, current)
        self._objects[kind][ref] = obj
        self._index(kind, obj)

    def _index(self, kind: str, obj: Obj) -> None:
        key = _owner_key(kind, obj)
        if key is not None:
            self._owned.setdefault(key, {})[(kind, obj["metadata"]["name"])] = obj

    def _unindex(self, kind: str, obj: Obj) -> None:
        key = _owner_key(kind, obj)
        owned = self._owned.get(key) if key is not None else None
        if owned is None:
            return
        owned.pop((kind, obj["metadata"]["name"]), None)
        if not owned:
            del self._owned[key]  # type: ignore[arg-type]  # key is not None when owned is


def _kept(watched: WatchedKind, obj: Raw) -> Obj | None:
    """What the store keeps of OBJ; None: not ours to keep. The apiVersion and kind a LIST's items lack;
    no managedFields (large, never read); of a CRD only whether it is established (their schemas run
    to megabytes)."""
    obj.setdefault("apiVersion", watched.api_version)
    obj.setdefault("kind", watched.kind)
    meta = obj.get("metadata") or {}
    if watched.kind == CRD_KIND:
        if meta.get("name") not in WATCHED_CRDS:
            return None
        return {
            "apiVersion": obj.get("apiVersion"),
            "kind": CRD_KIND,
            "metadata": {k: meta.get(k) for k in ("name", "uid", "resourceVersion")},
            "status": {"conditions": (obj.get("status") or {}).get("conditions") or []},
        }
    if watched.kind in _OWNED_KINDS and owner_of(meta.get("labels") or {}) is None:
        return None  # labelled ours but of no ModelDeployment: nothing to reconcile it with
    meta.pop("managedFields", None)
    return obj


class Informer:
    """LIST, then WATCH from the list's resourceVersion, into the store; ``run`` loops until stopped."""

    def __init__(
        self,
        watched: WatchedKind,
        namespace: str | None,
        source: ListWatch,
        store: Store,
        changed: Callable[[Change], None],
        listed: Callable[[Informer], None],
        backoff: Backoff | None = None,
    ) -> None:
        self.watched = watched
        self.namespace = namespace
        self._source = source
        self._store = store
        self._changed = changed
        self._listed = listed
        self._backoff = backoff or Backoff(0.2, 10.0)
        self.resource_version: str | None = None  # None: list (again) before watching
        self.has_listed = False
        self._failures = 0  # in a row, for the backoff
        self._stop = threading.Event()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def list(self) -> None:
        w = self.watched
        kept: list[Obj] = []
        version = ""
        # Trimmed page by page: the untrimmed listing of every pod is never held at once.
        pages = self._source.list_pages(w.api_version, w.kind, self.namespace, w.label_selector)
        for items, page_version in pages:
            kept.extend(obj for obj in (_kept(w, item) for item in items) if obj is not None)
            version = page_version
        if self.stopped:
            return
        changes = self._store.replace(w.kind, self.namespace, kept)
        self.resource_version = version
        if self.has_listed:  # a relist: what changed meanwhile is handled as events would have been
            for change in changes:
                self._changed(change)
            return
        self.has_listed = True  # the first: the gate's (or the new kind's) resync covers every object
        self._listed(self)

    def watch(self) -> None:
        """One watch, from the last resourceVersion until the server ends it (or the informer stops)."""
        w = self.watched
        events = self._source.watch_objects(
            w.api_version,
            w.kind,
            self.namespace,
            w.label_selector,
            self.resource_version or "",
            WATCH_TIMEOUT_SECONDS,
        )
        for event_type, obj in events:
            if self.stopped:
                return
            version = _version(obj)
            if event_type != "BOOKMARK":
                kept = _kept(w, obj)
                # An object that stopped being ours (a label removed) leaves the store as if deleted.
                change = self._store.update(w.kind, DELETED if kept is None else event_type, kept or obj)
                if change is not None:
                    self._changed(change)
            self.resource_version = version or self.resource_version

    def run(self) -> None:
        while not self.stopped:
            self.step()

    def step(self) -> None:
        """List if need be, then watch once; a failure is logged and waited out here."""
        try:
            if self.resource_version is None:
                self.list()
            self.watch()
            self._failures = 0
        except KubeError as error:
            # 410: the resourceVersion is no longer kept. Any other API error (an ERROR event, the kind
            # not served yet, throttling or a 5xx while the API server restarts): list again too.
            self.resource_version = None
            if error.status == GONE:
                log.info("watch of %s expired: listing again", self.watched.kind)
                return
            self._failed(f"listing again: {error}")
        except Exception as error:  # noqa: BLE001 - a dropped connection: watch again from where we were
            self._failed(f"watching again: {error!r}")

    def _failed(self, what: str) -> None:
        self._failures += 1
        log.warning("watch of %s failed, %s", self.watched.kind, what)
        self._stop.wait(self._backoff.delay(self._failures - 1))


class Watches:
    """The informers of every kind in WATCHED, the gate of their first LISTs, and what each change
    queues: the ModelDeployment itself, the owner a child is labelled with, the ModelDeployments
    naming a Gateway; a CRD that becomes established starts its kind's informers (and one that goes
    stops them). QUEUE gets the keys, RESYNC is called when a kind appears or goes, DELETED
    (cache.Cache.watched_deletion) hears of every child's deletion."""

    def __init__(
        self,
        source: ListWatch,
        store: Store,
        namespaces: tuple[str, ...],
        queue: Callable[[Key], None],
        resync: Callable[[], None],
        deleted: Callable[[Key, str, str, str], None],
        peering_name: str = "",
        peers: Callable[[list[Obj]], None] | None = None,
        spawn: Callable[[Informer], None] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.store = store
        self._backoff = backoff
        self._peering_name = peering_name
        self._peers = peers
        self._source = source
        self._namespaces = namespaces
        self._queue = queue
        self._resync = resync
        self._deleted = deleted
        self._spawn = spawn or _thread
        self._gate = threading.Condition()
        self._unlisted: set[Informer] = set()  # started before the gate opened, first LIST not in
        self._opened = False
        self._stopped = False
        self.gate_signals = 0  # how often the gate was signalled: once per informer, whatever the objects
        self._lock = threading.Lock()
        self._informers: dict[str, list[Informer]] = {}  # by kind

    def start(self) -> None:
        for watched in WATCHED:
            if watched.requires_crd is None:
                self._start(watched)
        if self._peering_name:
            self._start(peering(self._namespaces))

    def stop(self) -> None:
        with self._lock:
            informers = [i for group in self._informers.values() for i in group]
            self._informers.clear()
        for informer in informers:
            informer.stop()
        with self._gate:
            self._stopped = True
            self._gate.notify_all()

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Block until every informer started before now has done its first LIST (then the gate is
        open for good); False on timeout or when the watches stopped first."""
        with self._gate:
            while self._unlisted:
                if self._stopped or not self._gate.wait(timeout):
                    return False
            self._opened = True
            return True

    @property
    def informers(self) -> list[Informer]:
        with self._lock:
            return [i for group in self._informers.values() for i in group]

    # Plumbing

    def _start(self, watched: WatchedKind) -> None:
        spaces: tuple[str | None, ...] = (
            self._namespaces if watched.namespaced and self._namespaces else (None,)
        )
        started = [
            Informer(
                watched, namespace, self._source, self.store, self._on_change, self._on_listed, self._backoff
            )
            for namespace in spaces
        ]
        with self._lock:
            if watched.kind in self._informers:
                return
            self._informers[watched.kind] = started
        with self._gate:
            if not self._opened:
                self._unlisted.update(started)
        for informer in started:
            self._spawn(informer)

    def _on_listed(self, informer: Informer) -> None:
        if informer.watched.kind in PEERING_KINDS:
            self._peering_changed()
        if informer.watched is CRDS:
            # Before the CRD informer counts as listed, so the gate also waits for the kinds it serves.
            for crd in sorted(WATCHED_CRDS):
                if self.store.established(crd):
                    self._crd_changed(crd)
        late = informer.watched.requires_crd is not None
        if late:
            self._update_listed_crds()
        with self._gate:
            self._unlisted.discard(informer)
            self.gate_signals += 1
            self._gate.notify_all()
            opened = self._opened
        if late and opened:  # its objects were never seen (a Gateway named before its CRD came)
            log.info("%s is served and listed: reconciling every ModelDeployment", informer.watched.kind)
            self._resync()

    def _update_listed_crds(self) -> None:
        """Publish the CRDs whose kinds are listed in every namespace."""
        with self._lock:
            listed = frozenset(
                group[0].watched.requires_crd
                for group in self._informers.values()
                if group[0].watched.requires_crd and all(i.has_listed for i in group)
            )
        self.store.set_listed_crds(listed)

    def _crd_changed(self, crd: str) -> None:
        if crd not in WATCHED_CRDS:
            return
        kinds = [w for w in WATCHED if w.requires_crd == crd]
        if self.store.established(crd):
            for watched in kinds:
                self._start(watched)
            return
        with self._lock:
            gone = [i for w in kinds for i in self._informers.pop(w.kind, [])]
        if not gone:
            return
        for informer in gone:
            informer.stop()
        with self._gate:
            self._unlisted.difference_update(gone)  # the gate waits for no kind that is not served
            self._gate.notify_all()
        self._update_listed_crds()
        for watched in kinds:
            for change in self.store.drop(watched.kind):
                self._on_change(change)
        log.info("%s is no longer served: reconciling every ModelDeployment", crd)
        self._resync()

    def _peering_changed(self) -> None:
        """Tell PEERS the status of every peering object of ours (kopf's peers in it)."""
        if self._peers is not None:
            self._peers(self.store.peerings(self._peering_name))

    def _on_change(self, change: Change) -> None:
        obj = change.obj
        meta = obj["metadata"]
        if change.kind == CRD_KIND:
            self._crd_changed(meta["name"])
        elif change.kind in PEERING_KINDS:
            if meta["name"] == self._peering_name:
                self._peering_changed()
        elif change.kind == specs.KIND:
            if meta.get("namespace"):
                self._queue((meta["namespace"], meta["name"]))
        elif change.kind == children.GATEWAY.kind:
            for named in self.store.naming_gateway(_ref(obj)):
                self._queue(named)
        else:
            owner = _owner_key(change.kind, obj)
            if owner is None:
                return
            if change.type == DELETED:
                self._deleted(owner, change.kind, meta["name"], _uid(obj))
            self._queue(owner)


def _thread(informer: Informer) -> None:
    where = f"/{informer.namespace}" if informer.namespace else ""
    thread = threading.Thread(target=informer.run, name=f"watch-{informer.watched.kind}{where}", daemon=True)
    thread.start()


def resources(namespaces: tuple[str, ...] = ()) -> set[tuple[str, str]]:
    """(group, plural) of every kind the informers list and watch (tests/chart/test_rbac.py)."""
    return {(w.group, w.plural) for w in (*WATCHED, peering(namespaces))}
