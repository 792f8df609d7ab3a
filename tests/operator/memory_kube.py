"""A small in-memory stand-in at the Kube seam, for the executor's unit tests only (every e2e test runs
against the real cluster). It keeps objects by (kind, namespace, name), counts every call, applies a
manifest as a server-side apply of all its fields would, and plays the watches: ``snapshot`` is what
kopf's indexes would hold, either current or, with ``lag()``, frozen at an earlier moment."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException
from modelplane import children, spec
from modelplane.cache import Key, Snapshot
from modelplane.consumers import Directory, directory
from modelplane.kube import KubeError
from modelplane.render.cache import owner_of
from modelplane.render.common import LABEL_NAME

Obj = dict[str, Any]


class MemoryKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.secrets: dict[tuple[str, str], frozenset[str]] = {}
        self.calls: list[tuple[str, str, str]] = []  # (verb, kind, name)
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
        return copy.deepcopy(body)

    def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str) -> None:
        self.calls.append(("delete", kind, name))
        current = self.objects.get((kind, namespace, name))
        if current is not None and current["metadata"]["uid"] == uid:
            del self.objects[(kind, namespace, name)]

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

    def lag(self) -> None:
        """From now on the watches show the objects as they are at this moment."""
        self._frozen = copy.deepcopy(self.objects)

    def catch_up(self) -> None:
        self._frozen = None

    # What the tests arrange

    def create_md(self, body: Mapping[str, Any]) -> Obj:
        obj = copy.deepcopy(dict(body))
        obj["metadata"].setdefault("uid", self._uid())
        obj["metadata"].setdefault("generation", 1)
        obj["metadata"]["resourceVersion"] = self._next_version()
        self.objects[(spec.KIND, obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        return obj

    def update_spec(self, namespace: str, name: str, **changes: Any) -> None:
        body = self.objects[(spec.KIND, namespace, name)]
        body["spec"].update(changes)
        for key in [k for k, v in changes.items() if v is None]:
            del body["spec"][key]
        body["metadata"]["generation"] += 1
        body["metadata"]["resourceVersion"] = self._next_version()

    def edit(self, kind: str, namespace: str, name: str, change: Any) -> None:
        """Someone else changed the object: CHANGE(obj) mutates it; a new resourceVersion."""
        obj = self.objects[(kind, namespace, name)]
        change(obj)
        obj["metadata"]["resourceVersion"] = self._next_version()

    def add_pod(self, namespace: str, owner: str, name: str, **status: Any) -> None:
        self.objects[("Pod", namespace, name)] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": self._uid(),
                "labels": {LABEL_NAME: owner},
                "resourceVersion": self._next_version(),
            },
            "spec": {"containers": []},
            "status": status,
        }

    def writes(self) -> list[tuple[str, str, str]]:
        return [call for call in self.calls if call[0] not in ("get", "list")]

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _uid(self) -> str:
        self._uids += 1
        return f"uid-{self._uids}"


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
