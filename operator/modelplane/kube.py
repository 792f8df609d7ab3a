"""The one place that calls the Kubernetes API.

404 becomes None; other API failures become :class:`KubeError` (and are counted). Children are
written with server-side apply under one field manager. ``list_pages`` and ``watch_objects`` are
what the informers (informer.py) list and watch with. Secrets are only ever read one by one, by
name (GET): never listed, never watched; except the consumer Secrets of the consumer namespace, whose
metadata only (never a key) is listed (consumer_secrets).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

from modelplane import consumers, metrics
from modelplane import spec as specs

Obj = dict[str, Any]
EVENT_COMPONENT: Final = "modelplane-operator"
# A list answered as metadata only (names, labels, annotations): no Secret's data leaves the API server.
METADATA_ONLY: Final = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


# A LIST may take long on a large cluster; a watch ends on the server's side after its timeout, and a
# read timeout a minute later tells a dead connection (no FIN, no RST) from a quiet one.
LIST_TIMEOUT_SECONDS: Final = 120
LIST_PAGE_SIZE: Final = 500  # client-go's reflector pages its LISTs by as many
WATCH_READ_GRACE_SECONDS: Final = 60
# Every informer holds a connection for its watch (informer.WATCHED, per namespace), and the workers
# need theirs beside them: the client's default pool (5 per core) would drop and redial connections.
CONNECTION_POOL_SIZE: Final = 64


class KubeError(RuntimeError):
    """An API call failed for a reason other than 404."""

    def __init__(self, verb: str, what: str, error: ApiException) -> None:
        super().__init__(f"{verb} {what}: {error.status} {error.reason}: {_api_message(error)}")
        self.status = error.status
        self.causes = _api_causes(error)

    @property
    def namespace_terminating(self) -> bool:
        """The namespace is being deleted: nothing new can be created in it, ever again."""
        return self.status == 403 and "NamespaceTerminating" in self.causes


def load_client() -> k8s.ApiClient:
    """In-cluster credentials when in a pod, else KUBECONFIG (as kubectl would)."""
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
    configuration = k8s.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = CONNECTION_POOL_SIZE
    return k8s.ApiClient(configuration)


class Kube:
    def __init__(self, api_client: k8s.ApiClient, field_manager: str) -> None:
        self._dynamic: Any = DynamicClient(api_client)  # type: ignore[no-untyped-call]
        self._field_manager = field_manager

    # Reads

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        with self._errors("get", f"{kind} {namespace}/{name}"):
            try:
                return _plain(self._resource(api_version, kind).get(name=name, namespace=namespace))
            except NotFoundError:
                return None

    def secret_keys(self, namespace: str, name: str) -> frozenset[str] | None:
        """The keys of the one Secret a ModelDeployment names (values are never kept), None if absent."""
        secret = self.get("v1", "Secret", namespace, name)
        if secret is None:
            return None
        return frozenset((secret.get("data") or {}).keys()) | frozenset(
            (secret.get("stringData") or {}).keys()
        )

    def consumer_secrets(self, namespace: str) -> consumers.Directory:
        """The consumer directory: the metadata of the Secrets labelled as consumers in NAMESPACE."""
        with self._errors("list", f"consumer Secrets in {namespace}"):
            result = self._resource("v1", "Secret").get(
                namespace=namespace,
                label_selector=consumers.LABEL_CONSUMER,
                header_params={"Accept": METADATA_ONLY},
            )
        items = _plain(result).get("items") or []
        return consumers.directory(namespace, [item.get("metadata") or {} for item in items])

    def provisioning_failure(self, namespace: str, claim: str) -> str | None:
        """The provisioner's own reason the claim has no volume: the message of its latest
        ProvisioningFailed Event, None if it has none. Listed by field selector, never watched, and
        only while a model cache's claim stays unbound (reconcile.py)."""
        selector = (
            f"involvedObject.kind=PersistentVolumeClaim,involvedObject.name={claim},reason=ProvisioningFailed"
        )
        with self._errors("list", f"Events of PersistentVolumeClaim {namespace}/{claim}"):
            found = _plain(self._resource("v1", "Event").get(namespace=namespace, field_selector=selector))
        events = found.get("items") or []
        latest = max(
            events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""), default=None
        )
        return str(latest.get("message") or "") or None if latest else None

    def list_pages(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None
    ) -> Iterator[tuple[list[Obj], str]]:
        """Every object of KIND (in NAMESPACE; None: in all), filtered by the server, LIST_PAGE_SIZE at a
        time, as client-go's reflector lists: a caller that trims each page before asking for the next
        never holds a whole listing of thousands of pods at once. Each page comes with the list's
        resourceVersion (to watch from). As the API sends them: a list's items have no apiVersion or
        kind. A continue token that expired midway is 410 Gone, as a watch's would be: list again."""
        token: str | None = None
        while True:
            with self._errors("list", f"{kind} in {namespace or 'every namespace'}"):
                response = self._resource(api_version, kind).get(
                    namespace=namespace,
                    label_selector=label_selector,
                    limit=LIST_PAGE_SIZE,
                    _continue=token,
                    serialize=False,  # the raw JSON: a ResourceInstance per object would cost as much again
                    _request_timeout=LIST_TIMEOUT_SECONDS,
                )
            listing = json.loads(response.data)
            del response
            meta = listing.get("metadata") or {}
            yield listing.get("items") or [], str(meta.get("resourceVersion") or "")
            token = meta.get("continue") or None
            if token is None:
                return

    def watch_objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None,
        resource_version: str,
        timeout_seconds: int,
    ) -> Iterator[tuple[str, Obj]]:
        """The watch events (type, object) of KIND after RESOURCE_VERSION, with bookmarks, until the
        server ends the watch after TIMEOUT_SECONDS. An ERROR event (410 Gone: that resourceVersion is
        no longer kept) raises KubeError; a lost connection raises what the transport raised."""
        resource = self._resource(api_version, kind)
        with self._errors("watch", f"{kind} in {namespace or 'every namespace'}"):
            for event in k8s_watch.Watch().stream(  # type: ignore[no-untyped-call]
                resource.get,
                namespace=namespace,
                label_selector=label_selector,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                # Also makes the stream end (and raise 410) where it would retry on its own.
                timeout_seconds=timeout_seconds,
                serialize=False,
                _request_timeout=(LIST_TIMEOUT_SECONDS, timeout_seconds + WATCH_READ_GRACE_SECONDS),
            ):
                yield str(event["type"]), event["raw_object"]

    # Writes

    def apply(self, manifest: Mapping[str, Any]) -> Obj:
        meta = manifest["metadata"]
        what = f"{manifest['kind']} {meta.get('namespace')}/{meta['name']}"
        with self._errors("apply", what):
            resource = self._resource(manifest["apiVersion"], manifest["kind"])
            result = self._dynamic.server_side_apply(
                resource,
                body=dict(manifest),
                name=meta["name"],
                namespace=meta.get("namespace"),
                field_manager=self._field_manager,
                force_conflicts=True,
            )
            metrics.CHILD_WRITES.labels(kind=manifest["kind"], verb="apply").inc()
            return _plain(result)

    def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str) -> None:
        """Delete exactly this object (the uid precondition spares a namesake made since)."""
        with self._errors("delete", f"{kind} {namespace}/{name}"):
            try:
                self._resource(api_version, kind).delete(
                    name=name,
                    namespace=namespace,
                    body={"preconditions": {"uid": uid}, "propagationPolicy": "Background"},
                )
                metrics.CHILD_WRITES.labels(kind=kind, verb="delete").inc()
            except NotFoundError:
                pass

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Obj:
        """A merge patch of the status subresource (keys set to None are removed); the object after."""
        with self._errors("patch", f"{specs.KIND} {namespace}/{name} status"):
            resource = self._resource(specs.API_VERSION, specs.KIND)
            result = self._dynamic.patch(
                resource.status,
                body={"status": dict(status)},
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
                field_manager=self._field_manager,
            )
            return _plain(result)

    def post_event(
        self, namespace: str, name: str, uid: str, warning: bool, reason: str, message: str
    ) -> None:
        """An Event regarding the ModelDeployment NAMESPACE/NAME."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        event = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": namespace},
            "regarding": {
                "apiVersion": specs.API_VERSION,
                "kind": specs.KIND,
                "name": name,
                "namespace": namespace,
                "uid": uid,
            },
            "type": "Warning" if warning else "Normal",
            "reason": reason,
            "note": message[:1024],
            "action": "Reconcile",
            "eventTime": now,
            "reportingController": f"{specs.GROUP}/operator",
            "reportingInstance": EVENT_COMPONENT,
        }
        with self._errors("create", f"Event for {namespace}/{name}"):
            self._resource("events.k8s.io/v1", "Event").create(body=event, namespace=namespace)

    def ensure_peering(self, name: str, namespaces: tuple[str, ...]) -> None:
        """kopf's peering object must exist for peering to work; create it once if it is missing."""
        targets: list[tuple[str, str | None]] = (
            [("KopfPeering", ns) for ns in namespaces] if namespaces else [("ClusterKopfPeering", None)]
        )
        for kind, namespace in targets:
            if self.get("kopf.dev/v1", kind, namespace, name) is None:
                body: Obj = {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": {"name": name}}
                if namespace:
                    body["metadata"]["namespace"] = namespace
                with self._errors("create", f"{kind} {name}"):
                    try:
                        self._resource("kopf.dev/v1", kind).create(body=body, namespace=namespace)
                    except ApiException as error:
                        if error.status != 409:  # a peer made it first
                            raise

    # Plumbing

    def _resource(self, api_version: str, kind: str) -> Any:
        try:
            return self._dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            raise KubeError(
                "discover",
                f"{api_version} {kind}",
                ApiException(status=404, reason="resource type not served"),
            ) from None

    @contextmanager
    def _errors(self, verb: str, what: str) -> Iterator[None]:
        try:
            yield
        except ApiException as error:
            metrics.API_ERRORS.labels(verb=verb, code=str(error.status)).inc()
            raise KubeError(verb, what, error) from error


def _plain(obj: Any) -> Obj:
    result: Obj = obj.to_dict()
    return result


def _api_causes(error: ApiException) -> frozenset[str]:
    """The reasons in the Status's details.causes (e.g. NamespaceTerminating)."""
    try:
        details = json.loads(error.body or "{}").get("details") or {}
        return frozenset(str(c.get("reason")) for c in details.get("causes") or [] if c.get("reason"))
    except (ValueError, AttributeError):
        return frozenset()


def _api_message(error: ApiException) -> str:
    try:
        message = json.loads(error.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or error.body or "")
