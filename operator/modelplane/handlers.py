"""kopf registrations only: each handler names the ModelDeployment concerned and asks for a reconcile.

Level-based: every event of a ModelDeployment or of one of its children (server-side filtered by our
label, so other objects never reach the operator) leads to the same reconcile, which compares the
whole desired state with the live one. Only watching handlers are used, so kopf writes nothing of
its own into our objects (no finalizers, no status.kopf, no last-handled annotations).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import kopf

from modelplane import metrics
from modelplane import spec as specs
from modelplane.config import Config
from modelplane.kube import Kube, KubeError, load_client
from modelplane.reconcile import Reconciler
from modelplane.render.common import LABEL_MANAGED_BY, LABEL_NAME, MANAGED_BY

log = logging.getLogger(__name__)
OURS = {LABEL_MANAGED_BY: MANAGED_BY}
CHILD_RESOURCES = (
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("", "v1", "pods"),
)


class _State:
    config: Config | None = None  # set by `modelplane run` before kopf starts, else read at startup
    reconciler: Reconciler


STATE = _State()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    config = STATE.config or Config.from_env()
    STATE.config = config
    kube = Kube(load_client(), config.field_manager)
    STATE.reconciler = Reconciler(kube, config)
    # kopf keeps its own bookkeeping out of our status and objects.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="operator.modelplane.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="operator.modelplane.io")
    settings.persistence.finalizer = "operator.modelplane.io/finalizer"
    settings.posting.enabled = False  # our Events are posted by reconcile, on transitions only
    settings.execution.max_workers = 8
    settings.watching.server_timeout = 300
    for group, _version, plural in CHILD_RESOURCES:
        settings.watching.label_selectors[group or "v1", plural] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    if config.peering_name:
        settings.peering.name = config.peering_name
        settings.peering.mandatory = True
        settings.peering.clusterwide = not config.namespaces
        settings.peering.priority = config.peering_priority
        kube.ensure_peering(config.peering_name, config.namespaces)
    else:
        settings.peering.standalone = True
    # One line per handled event of every child would drown the log; ours say what was done.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    metrics.serve(config.metrics_port)
    log.info(
        "modelplane operator: runtime image %s, field manager %s",
        config.render.runtime_image,
        config.field_manager,
    )


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    log.info("modelplane operator stopping")


@kopf.on.event(specs.GROUP, specs.VERSION, specs.PLURAL)
def modeldeployment_event(
    *,
    type: str,  # noqa: A002 - kopf passes the event type by this name
    namespace: str | None,
    name: str,
    **_: Any,
) -> None:
    if namespace is None:
        return
    if type == "DELETED":
        metrics.record_ready(namespace, name, None)
        return
    _reconcile(namespace, name)


def _child_event(*, namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
    parent = labels.get(LABEL_NAME)
    if parent and namespace:
        _reconcile(namespace, parent)


for _group, _version, _plural in CHILD_RESOURCES:
    kopf.on.event(_group or "", _version, _plural, labels={**OURS, LABEL_NAME: kopf.PRESENT})(_child_event)


def _reconcile(namespace: str, name: str) -> None:
    try:
        STATE.reconciler.request(namespace, name)
    except KubeError as error:
        # Watching handlers are not retried by kopf: retry ourselves, a little later.
        delay = STATE.config.retry_seconds if STATE.config else 10.0
        log.warning("reconcile of %s/%s failed, retrying in %ss: %s", namespace, name, delay, error)
        retry = threading.Timer(delay, _reconcile, args=(namespace, name))
        retry.daemon = True
        retry.start()
