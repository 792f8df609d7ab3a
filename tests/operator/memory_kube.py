"""A small in-memory stand-in at the Kube seam, for the executor's unit tests only (every e2e test runs
against the real cluster). It keeps objects by (kind, namespace, name), counts every call, applies a
manifest as a server-side apply of all its fields would, and plays the watches: ``snapshot`` is what
the informers' store would hold, either current or, with ``lag()``, frozen at an earlier moment; and
``list_pages`` / ``watch_objects`` serve the informers themselves from a journal of every change
(``compact`` forgets it, as etcd does: watching from before then is 410 Gone)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException
from modelplane import children, spec
from modelplane.cache import Key, Snapshot
from modelplane.consumers import Directory, directory
from modelplane.kube import KubeError
from modelplane.render.cache import owner_of
from modelplane.render.common import LABEL_MANAGED_BY, LABEL_NAME, MANAGED_BY

Obj = dict[str, Any]


class MemoryKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.secrets: dict[tuple[str, str], frozenset[str]] = {}
        self.calls: list[tuple[str, str, str]] = []  # (verb, kind, name)
        self.page_size = 500  # of a LIST, as kube.LIST_PAGE_SIZE
        self.events: list[tuple[str, str, bool, str]] = []  # (namespace/name, reason, warning, message)
        self.refuse: dict[tuple[str, str], int] = {}  # (kind, name) -> HTTP status an apply gets
        self.crds: set[str] = set()
        self.terminating: set[str] = set()  # namespaces being deleted: nothing new may be created there
        # The consumer Secrets' metadata by namespace, as a metadata-only LIST answers it.
        self.consumer_metadata: dict[str, list[Obj]] = {}
        self.provisioning_failures: dict[tuple[str, str], str] = {}  # (namespace, claim) -> its Event
        self._version = 100
        self._uids = 0
        self._frozen: dict[tuple[str, str, str], Obj] | None = None
        self.journal: list[tuple[int, str, Obj]] = []  # (resourceVersion, event type, object)
        self._compacted = 0  # the journal holds nothing up to this resourceVersion
        self.broken_watches = 0  # the next watches fail as a dropped connection does
        self.watches = 0

    # The Kube seam (reconcile.KubeApi)

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        self.calls.append(("get", kind, name))
        obj = self.objects.get((kind, namespace or "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def apply(self, manifest: Mapping[str, Any]) -> Obj:
        kind, meta = manifest["kind"], manifest["metadata"]
        self.calls.append(("apply", kind, meta["name"]))
        if (kind, meta["name"]) in self.refuse:
            status = self.refuse[(kind, meta["name"])]
            raise KubeError("apply", f"{kind} {meta['name']}", ApiException(status=status, reason="Refused"))
        key = (kind, meta["namespace"], meta["name"])
        current = self.objects.get(key)
        if current is None and meta["namespace"] in self.terminating:
            raise KubeError("apply", f"{kind} {meta['name']}", _namespace_terminating(meta["namespace"]))
        body = copy.deepcopy(dict(manifest))
        if current is None:
            body["metadata"].update(uid=self._uid(), generation=1)
            body["status"] = {}
        else:
            body["metadata"].update(
                uid=current["metadata"]["uid"], generation=current["metadata"]["generation"]
            )
            body["status"] = current.get("status", {})
            unchanged = {k: v for k, v in current.items() if k != "metadata"} == {
                k: v for k, v in body.items() if k != "metadata"
            } and _meta(current) == _meta(body)
            if unchanged:
                return copy.deepcopy(current)
            body["metadata"]["generation"] += 1
        body["metadata"]["resourceVersion"] = self._next_version()
        self.objects[key] = body
        self._record("MODIFIED" if current is not None else "ADDED", body)
        return copy.deepcopy(body)

    def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str) -> None:
        self.calls.append(("delete", kind, name))
        current = self.objects.get((kind, namespace, name))
        if current is not None and current["metadata"]["uid"] == uid:
            self.remove(kind, namespace, name)

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Obj:
        self.calls.append(("patch", spec.KIND, name))
        body = self.objects[(spec.KIND, namespace, name)]
        merged = dict(body.get("status") or {})
        for key, value in status.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = copy.deepcopy(value)
        body["status"] = merged
        body["metadata"]["resourceVersion"] = self._next_version()
        self._record("MODIFIED", body)
        return copy.deepcopy(body)

    def post_event(
        self, namespace: str, name: str, uid: str, warning: bool, reason: str, message: str
    ) -> None:
        self.calls.append(("create", "Event", name))
        self.events.append((f"{namespace}/{name}", reason, warning, message))

    def secret_keys(self, namespace: str, name: str) -> frozenset[str] | None:
        self.calls.append(("get", "Secret", name))
        return self.secrets.get((namespace, name))

    def consumer_secrets(self, namespace: str) -> Directory:
        self.calls.append(("list", "Secret", namespace))
        return directory(namespace, self.consumer_metadata.get(namespace, []))

    def provisioning_failure(self, namespace: str, claim: str) -> str | None:
        self.calls.append(("list", "Event", claim))
        return self.provisioning_failures.get((namespace, claim))

    # The watches

    def snapshot(self, key: Key) -> Snapshot:
        objects = self._frozen if self._frozen is not None else self.objects
        namespace, name = key
        body = objects.get((spec.KIND, namespace, name))
        owned = tuple(
            copy.deepcopy(obj)
            for (kind, ns, _), obj in sorted(objects.items())
            if kind != spec.KIND and ns == namespace and owner_of(obj["metadata"].get("labels", {})) == name
        )
        crds = frozenset(self.crds & children.REQUIRED_CRDS)
        return Snapshot(body=copy.deepcopy(body) if body else None, objects=owned, crds=crds)

    def list_pages(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None
    ) -> Iterator[tuple[list[Obj], str]]:
        """PAGE_SIZE objects at a time, each page one call (a LIST with a continue token)."""
        items = [
            copy.deepcopy(obj)
            for (k, ns, _), obj in sorted(self.objects.items())
            if k == kind and namespace in (None, ns) and _selected(obj, label_selector)
        ]
        for item in items:  # a LIST's items carry no kind of their own
            del item["kind"], item["apiVersion"]
        version = str(self._version)
        for start in range(0, max(len(items), 1), self.page_size):
            self.calls.append(("list", kind, namespace or ""))
            yield items[start : start + self.page_size], version

    def watch_objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None,
        resource_version: str,
        timeout_seconds: int,
    ) -> Iterator[tuple[str, Obj]]:
        """The journal's events after RESOURCE_VERSION, then a bookmark; then the watch ends, as the
        server ends one at its timeout."""
        self.watches += 1
        if self.broken_watches:
            self.broken_watches -= 1
            raise ConnectionResetError("connection reset by peer")
        if int(resource_version) < self._compacted:
            raise KubeError("watch", kind, ApiException(status=410, reason="Gone"))
        for version, event_type, obj in list(self.journal):
            meta = obj["metadata"]
            if (
                version > int(resource_version)
                and obj["kind"] == kind
                and namespace in (None, meta.get("namespace", ""))
                and _selected(obj, label_selector)
            ):
                yield event_type, copy.deepcopy(obj)
        yield "BOOKMARK", {"kind": kind, "metadata": {"resourceVersion": str(self._version)}}

    def compact(self) -> None:
        """etcd forgot every version so far: a watch from one of them is answered 410 Gone."""
        self._compacted = self._version
        self.journal.clear()

    def lag(self) -> None:
        """From now on the watches show the objects as they are at this moment."""
        self._frozen = copy.deepcopy(self.objects)

    def catch_up(self) -> None:
        self._frozen = None

    # What the tests arrange

    def install_crd(self, name: str, established: bool = True) -> None:
        """The CustomResourceDefinition NAME, Established or not (yet)."""
        if established:
            self.crds.add(name)
        else:
            self.crds.discard(name)
        crd = self.objects.get(("CustomResourceDefinition", "", name)) or {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": name, "uid": self._uid()},
            "spec": {"versions": [{"name": "v1alpha1", "schema": "(large)"}]},
        }
        crd["status"] = {"conditions": [{"type": "Established", "status": str(established)}]}
        crd["metadata"]["resourceVersion"] = self._next_version()
        self.objects[("CustomResourceDefinition", "", name)] = crd
        self._record("MODIFIED", crd)

    def remove(self, kind: str, namespace: str, name: str) -> None:
        """The object is gone (deleted by anyone; the garbage collector)."""
        obj = self.objects.pop((kind, namespace, name))
        obj["metadata"]["resourceVersion"] = self._next_version()
        if kind == "CustomResourceDefinition":
            self.crds.discard(name)
        self._record("DELETED", obj)

    def create_md(self, body: Mapping[str, Any]) -> Obj:
        obj = copy.deepcopy(dict(body))
        obj["metadata"].setdefault("uid", self._uid())
        obj["metadata"].setdefault("generation", 1)
        obj["metadata"]["resourceVersion"] = self._next_version()
        self.objects[(spec.KIND, obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        self._record("ADDED", obj)
        return obj

    def update_spec(self, namespace: str, name: str, **changes: Any) -> None:
        body = self.objects[(spec.KIND, namespace, name)]
        body["spec"].update(changes)
        for key in [k for k, v in changes.items() if v is None]:
            del body["spec"][key]
        body["metadata"]["generation"] += 1
        body["metadata"]["resourceVersion"] = self._next_version()
        self._record("MODIFIED", body)

    def edit(self, kind: str, namespace: str, name: str, change: Any) -> None:
        """Someone else changed the object: CHANGE(obj) mutates it; a new resourceVersion."""
        obj = self.objects[(kind, namespace, name)]
        change(obj)
        obj["metadata"]["resourceVersion"] = self._next_version()
        self._record("MODIFIED", obj)

    def add_pod(self, namespace: str, owner: str, name: str, **status: Any) -> None:
        pod = self.objects[("Pod", namespace, name)] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": self._uid(),
                "labels": {LABEL_NAME: owner, LABEL_MANAGED_BY: MANAGED_BY},
                "resourceVersion": self._next_version(),
            },
            "spec": {"containers": []},
            "status": status,
        }
        self._record("ADDED", pod)

    def writes(self) -> list[tuple[str, str, str]]:
        return [call for call in self.calls if call[0] not in ("get", "list")]

    def _record(self, event_type: str, obj: Obj) -> None:
        self.journal.append((int(obj["metadata"]["resourceVersion"]), event_type, copy.deepcopy(obj)))

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _uid(self) -> str:
        self._uids += 1
        return f"uid-{self._uids}"


def _selected(obj: Obj, label_selector: str | None) -> bool:
    """Whether OBJ's labels match LABEL_SELECTOR (key=value terms, comma-separated), as the server's."""
    labels = obj["metadata"].get("labels") or {}
    terms = [term.split("=", 1) for term in (label_selector or "").split(",") if term]
    return all(labels.get(key) == value for key, value in terms)


def _meta(obj: Obj) -> tuple[Any, ...]:
    meta = obj["metadata"]
    return meta.get("labels"), meta.get("annotations"), meta.get("ownerReferences")


def _namespace_terminating(namespace: str) -> ApiException:
    """What the API server's NamespaceLifecycle admission answers a create in a namespace being deleted."""
    error = ApiException(status=403, reason="Forbidden")
    error.body = json.dumps(
        {
            "kind": "Status",
            "status": "Failure",
            "reason": "Forbidden",
            "code": 403,
            "message": f"unable to create new content in namespace {namespace} "
            "because it is being terminated",
            "details": {"causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace"}]},
        }
    )
    return error
