"""Desired vs actual for one ModelDeployment: apply what differs, prune what is no longer wanted,
then write status only when it changed. A steady state reads, and writes nothing.

Reconciles of one ModelDeployment never overlap: a request that arrives while one runs is folded
into a single follow-up run (the handlers for the MD and for its children all funnel here).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import InvalidOperation
from typing import Any, Final

from kubernetes.utils import parse_quantity

from modelplane import metrics, render, status
from modelplane import spec as specs
from modelplane.config import Config
from modelplane.kube import KEDA_CRD, Kube, KubeError
from modelplane.render.common import (
    ANNOTATION_APPLIED_HASH,
    CANARY,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGED_BY,
    STABLE,
)

log = logging.getLogger(__name__)

# Every kind the operator may create, in apply order; pruning walks the same list.
CHILD_KINDS: Final = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("keda.sh/v1alpha1", "ScaledObject"),
)
# Maps compared whole: the API treats them as atomic (and a superset selects other pods).
ATOMIC_MAPS: Final = (".selector", ".matchLabels")
EVENT_CONDITIONS: Final = ("Ready", "Degraded")  # a change of these posts an Event


@dataclass(frozen=True)
class Outcome:
    result: str  # "ok", "invalid", "gone", "error"
    applied: tuple[str, ...] = ()
    pruned: tuple[str, ...] = ()
    status_written: bool = False


def child_selector(name: str) -> str:
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_NAME}={name}"


class Reconciler:
    def __init__(self, kube: Kube, config: Config, clock: Callable[[], datetime] | None = None) -> None:
        self._kube = kube
        self._config = config
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._running: set[tuple[str, str]] = set()
        self._pending: set[tuple[str, str]] = set()

    def request(self, namespace: str, name: str) -> Outcome | None:
        """Reconcile now, or fold into the run in progress (then None is returned)."""
        key = (namespace, name)
        with self._lock:
            if key in self._running:
                self._pending.add(key)
                return None
            self._running.add(key)
        outcome: Outcome | None = None
        try:
            while True:
                outcome = self._timed(namespace, name)
                with self._lock:
                    if key not in self._pending:
                        self._running.discard(key)
                        return outcome
                    self._pending.discard(key)
        except BaseException:
            with self._lock:
                self._running.discard(key)
                self._pending.discard(key)
            raise

    def _timed(self, namespace: str, name: str) -> Outcome:
        started = time.monotonic()
        try:
            outcome = self.reconcile(namespace, name)
        except KubeError:
            metrics.RECONCILES.labels(result="error").inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
        metrics.RECONCILES.labels(result=outcome.result).inc()
        return outcome

    def reconcile(self, namespace: str, name: str) -> Outcome:
        body = self._kube.get(specs.API_VERSION, specs.KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            metrics.record_ready(namespace, name, None)
            return Outcome("gone")  # the garbage collector removes the children by owner reference
        previous: Mapping[str, Any] = body.get("status") or {}
        try:
            md = specs.parse(body)
        except specs.SpecError as error:
            written = self._not_ready(body, previous, "InvalidSpec", str(error))
            return Outcome("invalid", status_written=written)

        secret_found, secret_keys = self._credentials(md)
        keda = md.autoscaling is not None and md.autoscaling.uses_keda and self._kube.crd_installed(KEDA_CRD)
        live = self._observe_children(md, keda)
        canary_ready = status.canary_is_ready(md, live.get(("Deployment", f"{md.name}-{CANARY}")))
        desired = render.children(
            md,
            self._config.render,
            render.Observations(canary_ready=canary_ready, secret_keys=secret_keys, keda_installed=keda),
        )
        applied = []
        for manifest in desired:
            key = (manifest["kind"], manifest["metadata"]["name"])
            current = live.get(key)
            if not needs_apply(manifest, current):
                continue
            if current is not None and _applied_hash(current) == _applied_hash(manifest):
                metrics.DRIFT_CORRECTIONS.labels(kind=manifest["kind"]).inc()
                log.info("%s %s/%s was edited: putting it back", key[0], namespace, key[1])
            elif current is None and previous.get("observedGeneration") == md.generation:
                metrics.DRIFT_CORRECTIONS.labels(kind=manifest["kind"]).inc()
                log.info("%s %s/%s was deleted: recreating it", key[0], namespace, key[1])
            try:
                self._kube.apply(manifest)
            except KubeError as error:
                if refused_for_good(error):
                    # Quota, admission or validation said no: say so in status (the retry goes on).
                    self._not_ready(body, previous, "ApplyFailed", str(error))
                raise
            applied.append(f"{key[0]}/{key[1]}")
        wanted = {(m["kind"], m["metadata"]["name"]) for m in desired}
        pruned = []
        for (kind, child_name), obj in live.items():
            if (kind, child_name) not in wanted:
                api_version = next(v for v, k in CHILD_KINDS if k == kind)
                self._kube.delete(api_version, kind, namespace, child_name, obj["metadata"]["uid"])
                pruned.append(f"{kind}/{child_name}")
        if applied or pruned:
            log.info(
                "%s/%s: applied %s; pruned %s", namespace, name, applied or "nothing", pruned or "nothing"
            )
            live = self._observe_children(md, keda)

        pods = self._kube.list("v1", "Pod", namespace, child_selector(md.name))
        observed = status.Observed(
            deployments={
                track: dep
                for track in (STABLE, CANARY)
                if (dep := live.get(("Deployment", md.name if track == STABLE else f"{md.name}-{track}")))
            },
            pods=pods,
            autoscaler=live.get(("HorizontalPodAutoscaler", md.name)),
            keda_installed=keda,
            secret_found=secret_found,
        )
        new_status = status.compute(md, observed, previous, self._clock(), self._config.render.cluster_domain)
        written = self._write_status(md, previous, new_status)
        return Outcome("ok", tuple(applied), tuple(pruned), written)

    def _credentials(self, md: specs.ModelDeployment) -> tuple[bool | None, frozenset[str]]:
        """GET the Secrets the models name (and only those); keys only, values are not kept."""
        names = {m.credentials_secret for m in (md.model, md.canary.model if md.canary else None) if m}
        names.discard(None)
        if not names:
            return None, frozenset()
        found = True
        keys: frozenset[str] = frozenset()
        for secret in sorted(n for n in names if n):
            secret_keys = self._kube.secret_keys(md.namespace, secret)
            if secret_keys is None:
                found = False
            else:
                keys |= secret_keys
        return found, keys

    def _observe_children(
        self, md: specs.ModelDeployment, keda: bool
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Our children of this ModelDeployment, by (kind, name): our labels and its uid as owner."""
        result = {}
        for api_version, kind in CHILD_KINDS:
            if kind == "ScaledObject" and not keda:
                continue
            for obj in self._kube.list(api_version, kind, md.namespace, child_selector(md.name)):
                owners = obj["metadata"].get("ownerReferences") or []
                if any(owner.get("uid") == md.uid for owner in owners):
                    result[(kind, obj["metadata"]["name"])] = obj
        return result

    def _not_ready(
        self, body: Mapping[str, Any], previous: Mapping[str, Any], reason: str, message: str
    ) -> bool:
        """Ready=False with REASON when the spec cannot be rendered or its children cannot be applied."""
        meta = body["metadata"]
        condition = {
            "type": "Ready",
            "status": "False",
            "reason": reason,
            "message": message,
            "observedGeneration": meta.get("generation", 0),
        }
        old = status.condition(previous, "Ready")
        if old and all(old.get(k) == v for k, v in condition.items()):
            return False
        unchanged = old and old.get("status") == "False" and old.get("lastTransitionTime")
        condition["lastTransitionTime"] = unchanged or self._clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        self._kube.patch_status(
            meta["namespace"],
            meta["name"],
            {"observedGeneration": meta.get("generation", 0), "conditions": [condition]},
        )
        metrics.record_ready(meta["namespace"], meta["name"], "False")
        return True

    def _write_status(
        self, md: specs.ModelDeployment, previous: Mapping[str, Any], new: Mapping[str, Any]
    ) -> bool:
        ready = status.condition(new, "Ready")
        metrics.record_ready(md.namespace, md.name, str(ready["status"]) if ready else "Unknown")
        if dict(previous) == dict(new):
            return False
        patch: dict[str, Any] = {key: None for key in previous if key not in new}
        patch.update(new)
        self._kube.patch_status(md.namespace, md.name, patch)
        if ready:
            log.info(
                "%s/%s: Ready=%s %s: %s",
                md.namespace,
                md.name,
                ready["status"],
                ready["reason"],
                ready["message"],
            )
        for kind in EVENT_CONDITIONS:
            self._event_on_transition(md, status.condition(previous, kind), status.condition(new, kind))
        return True

    def _event_on_transition(
        self, md: specs.ModelDeployment, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
    ) -> None:
        if new is None:
            return
        if old is not None and (old.get("status"), old.get("reason")) == (
            new.get("status"),
            new.get("reason"),
        ):
            return
        kind = new["type"]
        bad = (kind == "Ready" and new["status"] != "True") or (
            kind == "Degraded" and new["status"] == "True"
        )
        if kind == "Degraded" and old is None and not bad:
            return  # "not degraded" at birth is no news
        try:
            self._kube.post_event(
                md, bad, str(new.get("reason")), f"{kind}={new['status']}: {new.get('message', '')}"
            )
        except KubeError as error:  # an Event is informative; losing one must not fail the reconcile
            log.warning("could not post an event: %s", error)


def refused_for_good(error: KubeError) -> bool:
    """A 4xx that retrying alone will not fix (a conflict or throttling will pass on their own)."""
    return 400 <= error.status < 500 and error.status not in (409, 429)


def needs_apply(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    """Whether the live object differs from what we render, in the fields we own."""
    if live is None:
        return True
    if _applied_hash(desired) != _applied_hash(live):
        return True  # our rendering changed (this also catches a field we stopped rendering)
    meta = desired["metadata"]
    live_meta = live.get("metadata") or {}
    for section in ("labels", "annotations"):
        if not contains(meta.get(section) or {}, live_meta.get(section) or {}):
            return True
    return not all(contains(value, live.get(key)) for key, value in desired.items() if key != "metadata")


def contains(desired: Any, live: Any, path: str = "") -> bool:
    """desired is a sub-tree of live (the server adds defaults; it drops empty values)."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return live is None and not desired
        if path.endswith(ATOMIC_MAPS):
            return dict(desired) == dict(live)  # an extra key changes what a selector selects
        return all(contains(value, live.get(key), f"{path}.{key}") for key, value in desired.items())
    if isinstance(desired, Sequence) and not isinstance(desired, str):
        if live is None:
            return not desired
        if not isinstance(live, Sequence) or isinstance(live, str) or len(live) != len(desired):
            return False
        return all(contains(d, item, path) for d, item in zip(desired, live, strict=True))
    if live is None:
        return desired in (False, 0, "")
    if desired == live:
        return True
    return ".resources." in f"{path}." and _same_quantity(desired, live)


def _same_quantity(a: Any, b: Any) -> bool:
    try:
        return bool(parse_quantity(a) == parse_quantity(b))  # type: ignore[no-untyped-call]
    except (ValueError, InvalidOperation, TypeError):
        return False


def _applied_hash(obj: Mapping[str, Any]) -> str | None:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ANNOTATION_APPLIED_HASH)
    return str(value) if value is not None else None
