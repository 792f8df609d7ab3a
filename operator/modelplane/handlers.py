"""kopf registrations only: startup and cleanup; kopf also runs peering (which operator of several is
active), whose objects the watches read too (Controller.paused).

The watches are the operator's own (informer.py): an informer per kind of children.CHILD_KINDS (server-
side filtered by our label, so other objects never reach the operator), the ModelDeployments, the
Gateways they name and the CRDs that serve child kinds; every change names the ModelDeployment concerned
to the controller's work queue. Level-based: each queues the same reconcile, which compares the whole
desired state with the cached one.

No kopf handler watches or indexes our objects, so kopf writes nothing of its own into them (no
finalizers, no status.kopf, no last-handled annotations), and kopf's per-object index gate, quadratic in
the objects at a start (tests/bench/results/operator.md), is not used. No reconcile runs until every
informer started at startup has done its first LIST (Watches.wait_synced), so a reconcile never sees a
half-listed cache; a kind whose CRD arrives later (KEDA's ScaledObject) is watched from then on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import kopf

from modelplane import metrics
from modelplane.cache import Cache
from modelplane.config import Config
from modelplane.events import EventRecorder
from modelplane.informer import Store, Watches
from modelplane.kube import Kube, load_client
from modelplane.reconcile import Controller, Reconciler

log = logging.getLogger(__name__)
# About five minutes of retries (seconds between them) for kopf's own API calls: see configure().
API_ERROR_BACKOFFS: Final = (1, 1, 2, 3, 5, 8, 13, 21, 30, 30, 30, 30, 30, 30, 30, 30, 30)


class _State:
    config: Config | None = None  # set by `modelplane run` before kopf starts, else read at startup
    controller: Controller | None = None
    cache: Cache | None = None
    watches: Watches | None = None
    events: EventRecorder | None = None


STATE = _State()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    config = STATE.config or Config.from_env()
    STATE.config = config
    kube = Kube(load_client(), config.field_manager)
    # kopf keeps its own bookkeeping out of our status and objects (it handles only peering here).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="operator.modelplane.io")
    settings.persistence.finalizer = "operator.modelplane.io/finalizer"
    settings.posting.enabled = False  # our Events: reconcile's, on transitions only (events.py)
    settings.watching.server_timeout = 300
    # kopf retries a failed API call (its peering keep-alive) for 54 s by default and then stops the whole
    # operator; an API server upgrade or restart can be away longer (its graceful shutdown alone may take
    # a minute), so retry for about five minutes (our own informers retry without end).
    settings.networking.error_backoffs = API_ERROR_BACKOFFS
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

    store = Store()
    STATE.cache = Cache(store.snapshot)
    STATE.events = EventRecorder(kube.post_event)
    STATE.events.start()
    reconciler = Reconciler(kube, config, STATE.cache, post_event=STATE.events)
    controller = Controller(reconciler, config, store.model_deployments, peered=bool(config.peering_name))
    STATE.controller = controller
    STATE.watches = Watches(
        kube,
        store,
        config.namespaces,
        queue=lambda key: controller.enqueue(*key),
        resync=controller.resync,
        deleted=STATE.cache.watched_deletion,
        peering_name=config.peering_name,
        peers=controller.peers_changed,
    )
    STATE.watches.start()
    controller.start(ready=STATE.watches.wait_synced)  # no reconcile before every first LIST is in
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
    if STATE.watches is not None:
        STATE.watches.stop()  # first: a controller still waiting for the first LISTs then starts nothing
    if STATE.controller is not None:
        await asyncio.to_thread(STATE.controller.stop)
    if STATE.events is not None:
        await asyncio.to_thread(STATE.events.stop)  # after the workers: their last Events get posted
