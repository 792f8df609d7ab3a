"""kopf registrations only: the watches (derived from children.CHILD_KINDS) feed kopf indexes, and every
event names the ModelDeployment concerned to the controller's work queue.

Level-based: every event of a ModelDeployment or of one of its children (server-side filtered by our
label, so other objects never reach the operator) queues the same reconcile, which compares the whole
desired state with the cached one. Only indexing and watching handlers are used, so kopf writes
nothing of its own into our objects (no finalizers, no status.kopf, no last-handled annotations).
kopf runs no handler until every index is filled from its first listing, so a reconcile never sees a
half-listed cache; a kind whose CRD arrives later (KEDA's ScaledObject) is watched from then on.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any, Final

import kopf

from modelplane import children, metrics
from modelplane import spec as specs
from modelplane.cache import Cache, Key, Snapshot
from modelplane.config import Config
from modelplane.kube import Kube, load_client
from modelplane.reconcile import Controller, Reconciler
from modelplane.render.cache import owner_of
from modelplane.render.common import LABEL_MANAGED_BY, MANAGED_BY

log = logging.getLogger(__name__)
OURS: Final = {LABEL_MANAGED_BY: MANAGED_BY}
CRD_GROUP: Final = "apiextensions.k8s.io"
SNAPSHOT_TIMEOUT: Final = 30.0


class NoEssenceStorage(kopf.DiffBaseStorage):
    """kopf builds every object's "essence" (a deep copy of its body) at every event, to find what
    changed for on.create/on.update/on.field handlers. This operator has none (watching and indexing
    handlers only: tests/chart/test_rbac.py checks kopf's registry), so the essence is never read;
    building it was a quarter of the operator's CPU with 100 ModelDeployments on fake nodes."""

    def build(
        self,
        *,
        body: kopf.Body,  # noqa: ARG002 - kopf's DiffBaseStorage signature
        extra_fields: Iterable[kopf.FieldSpec] | None = None,  # noqa: ARG002 - as above
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:  # noqa: ARG002 - as above
        return None

    def store(
        self,
        *,
        body: kopf.Body,  # noqa: ARG002 - kopf's DiffBaseStorage signature
        patch: kopf.Patch,  # noqa: ARG002 - as above
        essence: kopf.BodyEssence,  # noqa: ARG002 - as above
    ) -> None:
        return None


class _State:
    config: Config | None = None  # set by `modelplane run` before kopf starts, else read at startup
    controller: Controller | None = None
    cache: Cache | None = None


STATE = _State()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
    config = STATE.config or Config.from_env()
    STATE.config = config
    kube = Kube(load_client(), config.field_manager)
    # kopf keeps its own bookkeeping out of our status and objects.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="operator.modelplane.io")
    settings.persistence.diffbase_storage = NoEssenceStorage()
    settings.persistence.finalizer = "operator.modelplane.io/finalizer"
    settings.posting.enabled = False  # our Events are posted by reconcile, on transitions only
    settings.watching.server_timeout = 300
    for row in children.CHILD_KINDS:
        settings.watching.label_selectors[row.group or "v1", row.plural] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    if config.peering_name:
        settings.peering.name = config.peering_name
        settings.peering.mandatory = True
        settings.peering.clusterwide = not config.namespaces
        settings.peering.priority = config.peering_priority
        await asyncio.to_thread(kube.ensure_peering, config.peering_name, config.namespaces)
    else:
        settings.peering.standalone = True
    # One line per handled event of every child would drown the log; ours say what was done.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    metrics.serve(config.metrics_port)

    indexes = _Indexes(asyncio.get_running_loop(), kwargs)
    STATE.cache = Cache(indexes.snapshot)
    reconciler = Reconciler(kube, config, STATE.cache)
    STATE.controller = Controller(reconciler, config, indexes.keys, peered=bool(config.peering_name))
    STATE.controller.start()
    log.info(
        "modelplane operator: runtime image %s, field manager %s, %d workers, resync every %ss",
        config.render.runtime_image,
        config.field_manager,
        config.workers,
        config.resync_seconds,
    )


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    log.info("modelplane operator stopping")
    if STATE.controller is not None:
        await asyncio.to_thread(STATE.controller.stop)


# The watch-fed cache: kopf indexes, read by the controller's workers through _Indexes.


@kopf.index(specs.GROUP, specs.VERSION, specs.PLURAL)
async def model_deployments(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return {(namespace, name): _plain(body)} if namespace else None


async def children_by_owner(
    namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> Any:
    owner = owner_of(labels)
    return {(namespace, owner): _plain(body)} if owner and namespace else None


def _has_owner(labels: Mapping[str, str], **_: Any) -> bool:
    """Labelled with the ModelDeployment it is of (a model cache's fill pod by its cache-of label)."""
    return owner_of(labels) is not None


def _required_crd(name: str, **_: Any) -> bool:
    return name in children.REQUIRED_CRDS


@kopf.index(CRD_GROUP, "v1", "customresourcedefinitions", when=_required_crd)
async def required_crds(name: str, status: Mapping[str, Any], **_: Any) -> Any:
    established = any(
        c.get("type") == "Established" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return {name: established}


# What ModelDeployments refer to (children.REFERENCED_KINDS): every Gateway, unfiltered (a cluster has few).
_GATEWAY = children.GATEWAY


@kopf.index(_GATEWAY.group, _GATEWAY.version, _GATEWAY.plural)
async def gateways(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return {(namespace, name): _plain(body)} if namespace else None


@kopf.on.event(_GATEWAY.group, _GATEWAY.version, _GATEWAY.plural)
async def gateway_event(namespace: str | None, name: str, **kwargs: Any) -> None:
    """A Gateway changed (its address, its listeners): the ModelDeployments naming it say so in status."""
    if STATE.controller is None:
        return
    model_deployments: kopf.Index[Key, Any] = kwargs["model_deployments"]  # kopf passes every index
    for key, bodies in model_deployments.items():
        if any(specs.gateway_ref(body) == (namespace, name) for body in bodies):
            STATE.controller.enqueue(*key)


# Events: each names the ModelDeployment to reconcile.


@kopf.on.event(specs.GROUP, specs.VERSION, specs.PLURAL)
async def modeldeployment_event(namespace: str | None, name: str, **_: Any) -> None:
    if namespace and STATE.controller is not None:
        STATE.controller.enqueue(namespace, name)


async def child_event(
    type: str | None,  # noqa: A002 (kopf's name for the watch event's type)
    namespace: str | None,
    name: str,
    uid: str,
    labels: Mapping[str, str],
    body: kopf.Body,
    **_: Any,
) -> None:
    parent = owner_of(labels)
    if not parent or not namespace:
        return
    if type == "DELETED" and STATE.cache is not None:
        STATE.cache.watched_deletion((namespace, parent), body.get("kind", ""), name, uid)
    if STATE.controller is not None:
        STATE.controller.enqueue(namespace, parent)


@kopf.on.event(CRD_GROUP, "v1", "customresourcedefinitions", when=_required_crd)
async def required_crd_event(**_: Any) -> None:
    """A CRD a child kind needs came (or went): every ModelDeployment may render differently now."""
    if STATE.controller is not None:
        STATE.controller.alive()
        await asyncio.to_thread(STATE.controller.resync)


# kopf's peering keep-alive patches the peering object about once a minute. Seeing it proves kopf is
# not paused in favour of another operator (a paused kopf runs no handler and its watches, hence our
# cache, stand still): the controller's resync and retries wait while these stop coming.
_PEERING_PLURAL: Final = (
    "kopfpeerings" if os.environ.get("MODELPLANE_WATCH_NAMESPACES") else "clusterkopfpeerings"
)


def _our_peering(name: str, **_: Any) -> bool:
    return STATE.config is not None and bool(STATE.config.peering_name) and name == STATE.config.peering_name


@kopf.on.event("kopf.dev", "v1", _PEERING_PLURAL, when=_our_peering)
async def peering_event(**_: Any) -> None:
    if STATE.controller is not None:
        STATE.controller.alive()


for _row in children.CHILD_KINDS:
    _filters: dict[str, Any] = {"labels": OURS, "when": _has_owner}
    kopf.index(_row.group, _row.version, _row.plural, id="children_by_owner", **_filters)(children_by_owner)
    kopf.on.event(_row.group, _row.version, _row.plural, id="child_event", **_filters)(child_event)


class _Indexes:
    """Reads of the kopf indexes for the worker threads, done on kopf's event loop (where the
    indexes change), so a worker never sees one half-updated."""

    def __init__(self, loop: asyncio.AbstractEventLoop, indices: Mapping[str, Any]) -> None:
        self._loop = loop
        self._mds: kopf.Index[Key, Any] = indices["model_deployments"]
        self._children: kopf.Index[Key, Any] = indices["children_by_owner"]
        self._crds: kopf.Index[str, bool] = indices["required_crds"]
        self._gateways: kopf.Index[Key, Any] = indices["gateways"]

    def snapshot(self, key: Key) -> Snapshot:
        return asyncio.run_coroutine_threadsafe(self._snapshot(key), self._loop).result(SNAPSHOT_TIMEOUT)

    def keys(self) -> list[Key]:
        return asyncio.run_coroutine_threadsafe(self._keys(), self._loop).result(SNAPSHOT_TIMEOUT)

    async def _snapshot(self, key: Key) -> Snapshot:
        bodies = list(self._mds.get(key, ()))
        # A namesake created right after a delete can briefly share the key: the live one wins.
        bodies.sort(key=lambda b: bool(b["metadata"].get("deletionTimestamp")))
        gateway_ref = specs.gateway_ref(bodies[0]) if bodies else None
        gateway = next(iter(self._gateways.get(gateway_ref, ())), None) if gateway_ref else None
        return Snapshot(
            body=bodies[0] if bodies else None,
            objects=tuple(self._children.get(key, ())),
            crds=frozenset(name for name, values in self._crds.items() if any(values)),
            gateway=gateway,
        )

    async def _keys(self) -> list[Key]:
        return list(self._mds.keys())


def _plain(body: kopf.Body) -> dict[str, Any]:
    """The object as plain dicts, without managedFields (large, and never read)."""
    raw = dict(body)
    raw["metadata"] = {k: v for k, v in dict(body["metadata"]).items() if k != "managedFields"}
    return raw
