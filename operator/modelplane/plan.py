"""Pure: (desired, observed, previous status, now) -> what to apply, what to prune, the status to write
and the events to post. reconcile.py carries a plan out through kube.py; nothing here does I/O.

A steady state plans nothing: a child is applied only when a field we own differs (or our rendering
changed, which the applied-hash annotation tells), status is written only when it changed, and an
Event is posted only when the Ready or Degraded condition changes status or reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import InvalidOperation
from typing import Any, Final

from modelplane import children, render, status
from modelplane import spec as specs
from modelplane.consumers import Directory
from modelplane.render.cache import caches, mounted_claims
from modelplane.render.common import ANNOTATION_APPLIED_HASH, CANARY, SHADOW, STABLE, quantity, track_name

EVENT_CONDITIONS: Final = ("Ready", "Degraded")  # a change of these posts an Event

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class Desired:
    """The ModelDeployment as the user wrote it: parsed, or why it cannot be."""

    namespace: str
    name: str
    uid: str
    generation: int
    md: specs.ModelDeployment | None  # None: the spec is invalid
    invalid: str = ""  # the parser's message (names the field and the fix)
    settings: render.RenderSettings = field(default_factory=render.RenderSettings)

    @property
    def secret_names(self) -> tuple[str, ...]:
        """The credentials Secrets the spec names (read one by one, by name, never listed)."""
        if self.md is None:
            return ()
        models = (
            self.md.model,
            self.md.canary.model if self.md.canary else None,
            self.md.shadow.model if self.md.shadow else None,
        )
        return tuple(sorted({m.credentials_secret for m in models if m and m.credentials_secret}))

    @property
    def needs_consumers(self) -> bool:
        """Whether the consumer directory must be read (spec.access.consumers names some)."""
        return self.md is not None and bool(self.md.consumers)


def desired(body: Obj, settings: render.RenderSettings) -> Desired:
    meta = body["metadata"]
    try:
        md: specs.ModelDeployment | None = specs.parse(body)
        invalid = ""
    except specs.SpecError as error:
        md, invalid = None, str(error)
    return Desired(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta.get("uid", ""),
        generation=meta.get("generation", 0),
        md=md,
        invalid=invalid,
        settings=settings,
    )


@dataclass(frozen=True)
class Observed:
    """The cluster as the watches show it (children by kind and name, with any owner), and the rest."""

    children: Mapping[tuple[str, str], Obj] = field(default_factory=dict)
    pods: Sequence[Obj] = ()  # the model's own pods
    fill_pods: Sequence[Obj] = ()  # its model caches' fill Jobs' pods (cache.Snapshot.fill_pods)
    crds: frozenset[str] = frozenset()  # the CRDs of children.REQUIRED_CRDS that are installed
    # The keys of each credentials Secret the spec names (values are never read), None if it is absent.
    secrets: Mapping[str, frozenset[str] | None] = field(default_factory=dict)
    # The children (kind, name) earlier reconciles observed: at an unchanged generation a missing one of
    # these was deleted, one not among them is new (a ScaledObject once KEDA's CRD arrives). None: not
    # known (the operator just started), then any missing child at an unchanged generation was deleted.
    seen: frozenset[tuple[str, str]] | None = None
    gateway: Obj | None = None  # the Gateway spec.gateway names, as watched (None: absent or none named)
    # The consumer Secrets' metadata (spec.access.consumers), None when not read.
    consumers: Directory | None = None
    # Per model cache claim that stays unbound: its provisioner's reason (unbound_cache_claims).
    claim_failures: Mapping[str, str] = field(default_factory=dict)

    def owned(self, uid: str) -> dict[tuple[str, str], Obj]:
        """Our children of the ModelDeployment with this uid (a namesake's leftovers are not ours)."""
        return {
            key: obj
            for key, obj in self.children.items()
            if any(o.get("uid") == uid for o in (obj.get("metadata") or {}).get("ownerReferences") or [])
        }


@dataclass(frozen=True)
class ChildRef:
    """Exactly one live child: the uid makes a delete spare a namesake created since."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class Event:
    warning: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Repair:
    """A child someone deleted or edited, which the plan puts back (counted and logged)."""

    kind: str
    name: str
    how: str  # "deleted" or "edited"


@dataclass(frozen=True)
class Plan:
    apply: tuple[Obj, ...] = ()  # in children.CHILD_KINDS order
    prune: tuple[ChildRef, ...] = ()
    status: Mapping[str, Any] | None = None  # a merge patch of the status subresource; None: unchanged
    events: tuple[Event, ...] = ()
    repairs: tuple[Repair, ...] = ()
    ready: str = "Unknown"  # the Ready condition's status once the plan is carried out
    result: str = "ok"  # "ok" or "invalid"


def plan(desired: Desired, observed: Observed, previous: Obj, now: datetime) -> Plan:
    md = desired.md
    if md is None:
        return not_ready(desired, previous, "InvalidSpec", desired.invalid, now, result="invalid")
    owned = observed.owned(desired.uid)
    keda = md.autoscaling is not None and md.autoscaling.uses_keda and children.KEDA_CRD in observed.crds
    gateway_api = children.HTTPROUTE_CRD in observed.crds
    canary_ready = status.canary_is_ready(md, owned.get(("Deployment", track_name(md, CANARY))))
    secret_keys = frozenset().union(*(keys for keys in observed.secrets.values() if keys))
    manifests = render.children(
        md,
        desired.settings,
        render.Observations(
            canary_ready=canary_ready,
            secret_keys=secret_keys,
            keda_installed=keda,
            gateway_api_installed=gateway_api,
            consumers=observed.consumers,
            security_policy_installed=children.SECURITY_POLICY_CRD in observed.crds,
            traffic_policy_installed=children.TRAFFIC_POLICY_CRD in observed.crds,
        ),
    )
    manifests.sort(key=lambda m: children.apply_order(m["kind"]))  # stable: render's order within a kind
    cache_children = {
        name: (owned.get(("PersistentVolumeClaim", name)), owned.get(("Job", name))) for name, _ in caches(md)
    }
    manifests, kept = _hold_for_caches(md, manifests, owned, observed, cache_children)

    to_apply: list[Obj] = []
    repairs: list[Repair] = []
    for manifest in manifests:
        key = (manifest["kind"], manifest["metadata"]["name"])
        current = owned.get(key)
        if not needs_apply(manifest, current):
            continue
        to_apply.append(manifest)
        if current is not None and _applied_hash(current) == _applied_hash(manifest):
            repairs.append(Repair(*key, "edited"))
        elif (
            current is None
            and previous.get("observedGeneration") == md.generation
            and (observed.seen is None or key in observed.seen)
        ):
            repairs.append(Repair(*key, "deleted"))
    wanted = {(m["kind"], m["metadata"]["name"]) for m in manifests} | kept
    prune = [
        ChildRef(row.api_version, row.kind, desired.namespace, name, obj["metadata"]["uid"])
        for row in reversed(children.CHILD_KINDS)
        if row.applied
        for (kind, name), obj in sorted(owned.items())
        if kind == row.kind and (kind, name) not in wanted and not obj["metadata"].get("deletionTimestamp")
    ]

    # Status as the children will be once the plan is carried out: what is applied now is not yet
    # observed, so the executor plans again from the updated cache and writes that plan's status.
    stable_name, canary_name = md.name, track_name(md, CANARY)
    deployments = {
        track: dep
        for track, name in ((STABLE, stable_name), (CANARY, canary_name))
        if (dep := owned.get(("Deployment", name)))
    }
    found = [observed.secrets.get(name) is not None for name in desired.secret_names]
    new = status.compute(
        md,
        status.Observed(
            deployments=deployments,
            pods=observed.pods,
            autoscaler=owned.get(("HorizontalPodAutoscaler", md.name)),
            keda_installed=keda,
            secret_found=all(found) if found else None,
            gateway_api_installed=gateway_api,
            gateway=observed.gateway,
            route=owned.get(("HTTPRoute", md.name)),
            shadow=owned.get(("Deployment", track_name(md, SHADOW))),
            traffic_policy_installed=children.TRAFFIC_POLICY_CRD in observed.crds,
            consumers=_consumers_problem(md, observed),
            caches=cache_children,
            claim_failures=observed.claim_failures,
            fill_pods=observed.fill_pods,
        ),
        previous,
        now,
        desired.settings.cluster_domain,
    )
    return Plan(
        apply=tuple(to_apply),
        prune=tuple(prune),
        status=_patch(previous, new),
        events=_events(previous, new),
        repairs=tuple(repairs),
        ready=_ready(new),
    )


def _consumers_problem(md: specs.ModelDeployment, observed: Observed) -> status.AccessProblem | None:
    """What keeps spec.access from being enforced as written: a missing CRD, or unknown names."""
    if not md.consumers:
        return None
    missing = [
        kind
        for kind, crd, wanted in (
            ("SecurityPolicy", children.SECURITY_POLICY_CRD, True),
            ("BackendTrafficPolicy", children.TRAFFIC_POLICY_CRD, md.quota is not None),
        )
        if wanted and crd not in observed.crds
    ]
    if missing:
        return status.AccessProblem(missing_kinds=tuple(missing))
    directory = observed.consumers or Directory(namespace="")
    unknown = directory.resolve(md.consumers).unknown
    if unknown:
        return status.AccessProblem(unknown=unknown, namespace=directory.namespace)
    return None


def unbound_cache_claims(desired: Desired, live: Mapping[tuple[str, str], Obj]) -> list[str]:
    """The model cache claims whose fill Job exists but which have no volume yet: the ones whose
    provisioner may have said why it cannot make one (read by the executor, shown by status)."""
    if desired.md is None:
        return []
    found = []
    for name, _ in caches(desired.md):
        claim, job = live.get(("PersistentVolumeClaim", name)), live.get(("Job", name))
        if claim is None or job is None or claim["metadata"].get("deletionTimestamp"):
            continue
        if (claim.get("status") or {}).get("phase") != "Bound":
            found.append(name)
    return found


def _hold_for_caches(
    md: specs.ModelDeployment,
    manifests: list[render.Manifest],
    owned: Mapping[tuple[str, str], Obj],
    observed: Observed,
    cache_children: Mapping[str, tuple[Obj | None, Obj | None]],
) -> tuple[list[render.Manifest], set[tuple[str, str]]]:
    """The manifests to apply, and the live children to keep besides them.

    A Deployment whose model cache is not filled yet is neither created nor changed: the live one (a
    previous digest's, from its own cache) keeps serving until the new cache is Ready, and only then
    rolls over to it. A cache no desired manifest mounts stays while a live pod or a held Deployment
    still mounts it; once none does, it is pruned."""
    ready = {
        name
        for name, model in caches(md)
        if status.cache_state(name, model, *cache_children[name], fill_pods=observed.fill_pods).state
        == status.CACHE_READY
    }
    kept: set[tuple[str, str]] = set()
    in_use: set[str] = set()
    for pod in observed.pods:
        if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            in_use |= mounted_claims(pod.get("spec"))
    result = []
    for manifest in manifests:
        if manifest["kind"] == "Deployment":
            waiting = (mounted_claims(manifest["spec"]["template"]["spec"]) & set(cache_children)) - ready
            if waiting:
                key = ("Deployment", manifest["metadata"]["name"])
                live = owned.get(key)
                if live is not None:
                    kept.add(key)
                    in_use |= mounted_claims(((live.get("spec") or {}).get("template") or {}).get("spec"))
                continue
        result.append(manifest)
    for claim in in_use:
        if ("PersistentVolumeClaim", claim) in owned:
            kept |= {("PersistentVolumeClaim", claim), ("Job", claim)}
    return result, kept


def not_ready(
    desired: Desired, previous: Obj, reason: str, message: str, now: datetime, result: str = "ok"
) -> Plan:
    """Ready=False with REASON: the spec cannot be rendered (InvalidSpec) or a child was refused
    (ApplyFailed). Nothing already running is touched; the other conditions are left as they were."""
    condition = {
        "type": "Ready",
        "status": "False",
        "reason": reason,
        "message": message,
        "observedGeneration": desired.generation,
    }
    old = status.condition(previous, "Ready")
    if old and all(old.get(k) == v for k, v in condition.items()):
        return Plan(ready="False", result=result)
    unchanged = old and old.get("status") == "False" and old.get("lastTransitionTime")
    condition["lastTransitionTime"] = unchanged or now.strftime("%Y-%m-%dT%H:%M:%SZ")
    new = {"observedGeneration": desired.generation, "conditions": [condition]}
    return Plan(status=new, events=_events(previous, new), ready="False", result=result)


def _patch(previous: Obj, new: Obj) -> dict[str, Any] | None:
    if dict(previous) == dict(new):
        return None
    patch: dict[str, Any] = {key: None for key in previous if key not in new}
    patch.update(new)
    return patch


def _ready(new: Obj) -> str:
    ready = status.condition(new, "Ready")
    return str(ready["status"]) if ready else "Unknown"


def _events(previous: Obj, new: Obj) -> tuple[Event, ...]:
    """One Event per change of Ready or Degraded (status or reason); "not degraded" at birth is no news."""
    events = []
    for kind in EVENT_CONDITIONS:
        old, cond = status.condition(previous, kind), status.condition(new, kind)
        if cond is None:
            continue
        if old is not None and (old.get("status"), old.get("reason")) == (
            cond.get("status"),
            cond.get("reason"),
        ):
            continue
        bad = (kind == "Ready" and cond["status"] != "True") or (
            kind == "Degraded" and cond["status"] == "True"
        )
        if kind == "Degraded" and old is None and not bad:
            continue
        events.append(
            Event(bad, str(cond.get("reason")), f"{kind}={cond['status']}: {cond.get('message', '')}")
        )
    return tuple(events)


def needs_apply(desired: Obj, live: Obj | None) -> bool:
    """Whether the live object differs from what we render, in the fields we own."""
    if live is None:
        return True
    if children.by_kind(desired["kind"]).create_only:
        return False  # what would change is in its name (render/cache.py)
    if _applied_hash(desired) != _applied_hash(live):
        return True  # our rendering changed (this also catches a field we stopped rendering)
    atomic = children.by_kind(desired["kind"]).atomic_maps
    meta = desired["metadata"]
    live_meta = live.get("metadata") or {}
    for section in ("labels", "annotations"):
        if not contains(meta.get(section) or {}, live_meta.get(section) or {}):
            return True
    return not all(
        contains(value, live.get(key), f".{key}", atomic)
        for key, value in desired.items()
        if key != "metadata"
    )


def contains(desired: Any, live: Any, path: str = "", atomic: tuple[str, ...] = ()) -> bool:
    """desired is a sub-tree of live (the server adds defaults; it drops empty values). Maps at an
    ``atomic`` path compare whole; quantities under resources compare by value."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return live is None and not desired
        if path in atomic:
            return dict(desired) == dict(live)
        return all(contains(value, live.get(key), f"{path}.{key}", atomic) for key, value in desired.items())
    if isinstance(desired, Sequence) and not isinstance(desired, str):
        if live is None:
            return not desired
        if not isinstance(live, Sequence) or isinstance(live, str) or len(live) != len(desired):
            return False
        return all(contains(d, item, path, atomic) for d, item in zip(desired, live, strict=True))
    if live is None:
        return desired in (False, 0, "")
    if desired == live:
        return True
    return ".resources." in f"{path}." and _same_quantity(desired, live)


def _same_quantity(a: Any, b: Any) -> bool:
    try:
        return quantity(a) == quantity(b)
    except (ValueError, InvalidOperation, TypeError):
        return False


def _applied_hash(obj: Obj) -> str | None:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ANNOTATION_APPLIED_HASH)
    return str(value) if value is not None else None
