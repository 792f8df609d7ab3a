"""Observed state from the watches, and from our own writes until the watches catch up.

The watches (informer.py's store) give, per ModelDeployment, its body and every object carrying its
name label (children and pods), so a reconcile reads no API at all. What the operator itself just
wrote (an apply's response, a status patch's, a delete) is overlaid until the watch delivers that
resourceVersion or a later one, so a reconcile right after a write does not write again.

An overlay must never outlive the object: a DELETED event of the uid we wrote drops it at once, and a
child we wrote that the watch still does not show after CONFIRM_SECONDS is read once by name (GET)
before the overlay is trusted further. The watch cannot report an object it never saw: a kind whose
CRD arrived after the operator started is listed only once the API serves it (after 429 "storage is
(re)initializing" retries), and a child created and deleted before that listing is absent from it with
no event at all. The reconciler asks to run again when a confirmation comes due
(``confirm_due_in``), so such a deletion is repaired within seconds, not at the next resync.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from modelplane import spec as specs
from modelplane.render.cache import is_fill_pod

Obj = Mapping[str, Any]
Key = tuple[str, str]  # (namespace, ModelDeployment name)
# An overlaid object is dropped after this long even if no watch event confirmed it (a watch that
# restarted may have skipped its exact resourceVersion); the watch is the truth from then on.
OVERLAY_SECONDS: Final = 60.0
# A watch that runs shows our own write within a second; one that does not show it after this long has
# either not started yet (a kind whose CRD just arrived) or missed it (a restart that listed after it).
CONFIRM_SECONDS: Final = 5.0


@dataclass(frozen=True)
class Snapshot:
    """One ModelDeployment as the watches show it."""

    body: Obj | None = None  # None: no such ModelDeployment
    # Everything labelled with its name (render.cache.owner_of): children (any owner), its pods and its
    # model caches' fill pods.
    objects: tuple[Obj, ...] = ()
    crds: frozenset[str] = frozenset()  # the required CRDs (children.REQUIRED_CRDS) that are established
    # Children we wrote that the watch has not shown for CONFIRM_SECONDS: read them by name (confirmed()).
    unconfirmed: tuple[Obj, ...] = ()
    gateway: Obj | None = None  # the Gateway its spec.gateway names (children.REFERENCED_KINDS), if any

    @property
    def children(self) -> dict[tuple[str, str], Obj]:
        return {(o["kind"], o["metadata"]["name"]): o for o in self.objects if o.get("kind") != "Pod"}

    @property
    def pods(self) -> list[Obj]:
        """The model's own pods (its tracks' replicas)."""
        return [o for o in self.objects if o.get("kind") == "Pod" and not is_fill_pod(o)]

    @property
    def fill_pods(self) -> list[Obj]:
        """The pods of its model caches' fill Jobs: their pull reports the bytes each cache holds."""
        return [o for o in self.objects if is_fill_pod(o)]


@dataclass
class _Written:
    obj: Obj | None  # None: deleted by us
    uid: str
    resource_version: str
    at: float = field(default_factory=time.monotonic)
    confirm_at: float = 0.0  # when to read the object by name if the watch still does not show it


class Cache:
    def __init__(
        self, source: Callable[[Key], Snapshot], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._source = source
        self._clock = clock
        self._lock = threading.Lock()
        self._written: dict[Key, dict[tuple[str, str], _Written]] = {}

    def observe(self, key: Key) -> Snapshot:
        snapshot = self._source(key)
        with self._lock:
            written = self._written.get(key)
            if not written:
                return snapshot
            watched = {(o["kind"], o["metadata"]["name"]): o for o in snapshot.objects}
            if snapshot.body is not None:
                watched[(specs.KIND, key[1])] = snapshot.body
            now = self._clock()
            unconfirmed: list[Obj] = []
            for ref, ours in list(written.items()):
                shown = watched.get(ref)
                if now - ours.at > OVERLAY_SECONDS or _caught_up(ours, shown):
                    del written[ref]
                elif ours.obj is None:
                    watched.pop(ref, None)
                else:
                    watched[ref] = ours.obj
                    if shown is None and _child(ref) and now >= ours.confirm_at:
                        unconfirmed.append(ours.obj)
            if not written:
                del self._written[key]
        body = watched.pop((specs.KIND, key[1]), None)
        if snapshot.body is None:
            body = None  # deleted: what we wrote to it no longer matters
        return Snapshot(
            body=body,
            objects=tuple(watched.values()),
            crds=snapshot.crds,
            unconfirmed=tuple(unconfirmed),
            gateway=snapshot.gateway,
        )

    def wrote(self, key: Key, obj: Obj) -> None:
        """An apply or status patch returned OBJ: trust it until the watch shows it (or newer)."""
        meta = obj["metadata"]
        now = self._clock()
        entry = _Written(
            obj, meta.get("uid", ""), str(meta.get("resourceVersion", "")), now, now + CONFIRM_SECONDS
        )
        with self._lock:
            self._written.setdefault(key, {})[(obj["kind"], meta["name"])] = entry

    def confirmed(self, key: Key, ours: Obj, live: Obj | None) -> None:
        """A GET by name of OURS (from Snapshot.unconfirmed) returned LIVE: None, it is gone and the
        watch's view (without it) stands; else LIVE replaces it until the watch shows it."""
        ref = (ours["kind"], ours["metadata"]["name"])
        with self._lock:
            written = self._written.get(key, {})
            if ref not in written:
                return
            if live is None:
                del written[ref]
                return
            entry = written[ref]
            entry.obj = live
            entry.uid = live["metadata"].get("uid", "")
            entry.resource_version = str(live["metadata"].get("resourceVersion", ""))
            entry.confirm_at = self._clock() + CONFIRM_SECONDS

    def watched_deletion(self, key: Key, kind: str, name: str, uid: str) -> None:
        """The watch delivered the DELETED event of this object: what we wrote to it is gone with it
        (even if the watch never showed our write: it may have been folded into this event)."""
        with self._lock:
            written = self._written.get(key, {})
            ours = written.get((kind, name))
            if ours is not None and ours.obj is not None and ours.uid == uid:
                del written[(kind, name)]

    def confirm_due_in(self, key: Key) -> float | None:
        """Seconds until a child we wrote is due to be confirmed (None: none is pending), so that a
        reconcile runs then even if no event comes."""
        with self._lock:
            now = self._clock()
            due = [
                ours.confirm_at - now
                for ref, ours in self._written.get(key, {}).items()
                if ours.obj is not None and _child(ref) and ours.confirm_at > now
            ]
        return min(due, default=None)

    def deleted(self, key: Key, kind: str, name: str, uid: str) -> None:
        """We deleted this object: hide it until the watch no longer shows that uid."""
        with self._lock:
            self._written.setdefault(key, {})[(kind, name)] = _Written(None, uid, "", self._clock())

    def forget(self, keys: Iterable[Key]) -> None:
        with self._lock:
            for key in keys:
                self._written.pop(key, None)


def _child(ref: tuple[str, str]) -> bool:
    return ref[0] != specs.KIND


def _caught_up(ours: _Written, watched: Obj | None) -> bool:
    if ours.obj is None:  # a delete: done once the watch no longer has that object
        return watched is None or watched["metadata"].get("uid") != ours.uid
    if watched is None:
        return False
    version = str(watched["metadata"].get("resourceVersion", ""))
    if version == ours.resource_version:
        return True
    # resourceVersions are opaque, but etcd's are increasing integers: a later one supersedes ours.
    return version.isdigit() and ours.resource_version.isdigit() and int(version) > int(ours.resource_version)
