"""Observed state from the watches, and from our own writes until the watches catch up.

The watches (kopf indexes, handlers.py) give, per ModelDeployment, its body and every object carrying
its name label (children and pods), so a reconcile reads no API at all. What the operator itself just
wrote (an apply's response, a status patch's, a delete) is overlaid until the watch delivers that
resourceVersion or a later one, so a reconcile right after a write does not write again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from modelplane import spec as specs

Obj = Mapping[str, Any]
Key = tuple[str, str]  # (namespace, ModelDeployment name)
# An overlaid object is dropped after this long even if no watch event confirmed it (a watch that
# restarted may have skipped its exact resourceVersion); the watch is the truth from then on.
OVERLAY_SECONDS: Final = 60.0


@dataclass(frozen=True)
class Snapshot:
    """One ModelDeployment as the watches show it."""

    body: Obj | None = None  # None: no such ModelDeployment
    objects: tuple[Obj, ...] = ()  # everything labelled with its name: children (any owner) and pods
    crds: frozenset[str] = frozenset()  # the required CRDs (children.REQUIRED_CRDS) that are established

    @property
    def children(self) -> dict[tuple[str, str], Obj]:
        return {(o["kind"], o["metadata"]["name"]): o for o in self.objects if o.get("kind") != "Pod"}

    @property
    def pods(self) -> list[Obj]:
        return [o for o in self.objects if o.get("kind") == "Pod"]


@dataclass
class _Written:
    obj: Obj | None  # None: deleted by us
    uid: str
    resource_version: str
    at: float = field(default_factory=time.monotonic)


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
            for ref, ours in list(written.items()):
                if now - ours.at > OVERLAY_SECONDS or _caught_up(ours, watched.get(ref)):
                    del written[ref]
                elif ours.obj is None:
                    watched.pop(ref, None)
                else:
                    watched[ref] = ours.obj
            if not written:
                del self._written[key]
        body = watched.pop((specs.KIND, key[1]), None)
        if snapshot.body is None:
            body = None  # deleted: what we wrote to it no longer matters
        return Snapshot(body=body, objects=tuple(watched.values()), crds=snapshot.crds)

    def wrote(self, key: Key, obj: Obj) -> None:
        """An apply or status patch returned OBJ: trust it until the watch shows it (or newer)."""
        meta = obj["metadata"]
        entry = _Written(obj, meta.get("uid", ""), str(meta.get("resourceVersion", "")), self._clock())
        with self._lock:
            self._written.setdefault(key, {})[(obj["kind"], meta["name"])] = entry

    def deleted(self, key: Key, kind: str, name: str, uid: str) -> None:
        """We deleted this object: hide it until the watch no longer shows that uid."""
        with self._lock:
            self._written.setdefault(key, {})[(kind, name)] = _Written(None, uid, "", self._clock())

    def forget(self, keys: Iterable[Key]) -> None:
        with self._lock:
            for key in keys:
                self._written.pop(key, None)


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
