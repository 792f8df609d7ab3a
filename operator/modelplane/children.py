"""The one table of the kinds a ModelDeployment owns (or, for pods, only observes).

Everything that deals with a kind of child derives from this table: the watches (informer.py), the
apply order and the prune walk (plan.py), the comparison of what we render with what is live, and the
RBAC verbs, which tests/operator/test_rbac.py checks in the chart, operator/deploy/host-operator.yaml
and kopf's registry. Adding a child kind is one render function (render/) and one row here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

APPLY_VERBS: Final = ("get", "list", "watch", "create", "patch", "delete")
OBSERVE_VERBS: Final = ("get", "list", "watch")


@dataclass(frozen=True)
class ChildKind:
    api_version: str
    kind: str
    plural: str
    # The CustomResourceDefinition that serves the kind, when Kubernetes does not: the kind is watched
    # and applied once the CRD is installed (even after the operator started), skipped before.
    requires_crd: str | None = None
    # False: the operator only reads these (pods, which the Deployments own); never applied or pruned.
    applied: bool = True
    # Compare rules: the paths (from the object's root, list indexes left out) whose maps the API treats
    # as atomic, so they are compared whole: an extra key in a selector selects other pods.
    atomic_maps: tuple[str, ...] = ()
    # True: created, never patched (the API refuses most changes of a claim's or a Job's spec). What
    # would change is in the object's name instead, so a new rendering is a new object.
    create_only: bool = False

    @property
    def group(self) -> str:
        """The API group ("" for the core group)."""
        group, _, version = self.api_version.rpartition("/")
        return group if version else ""

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def verbs(self) -> tuple[str, ...]:
        """What the operator's RBAC must grant on the kind."""
        return APPLY_VERBS if self.applied else OBSERVE_VERBS


KEDA_CRD: Final = "scaledobjects.keda.sh"
HTTPROUTE_CRD: Final = "httproutes.gateway.networking.k8s.io"
SECURITY_POLICY_CRD: Final = "securitypolicies.gateway.envoyproxy.io"
TRAFFIC_POLICY_CRD: Final = "backendtrafficpolicies.gateway.envoyproxy.io"

# In apply order (a Deployment before what points at it); prune walks it backwards.
CHILD_KINDS: Final = (
    # First, so that new pods start isolated. Label selectors are atomic in the API: compared whole.
    ChildKind(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "networkpolicies",
        atomic_maps=(
            ".spec.podSelector",
            ".spec.ingress.from.namespaceSelector",
            ".spec.ingress.from.podSelector",
        ),
    ),
    # A model cache (render/cache.py): the claim and the Job that fills it, before the pods that mount it.
    ChildKind("v1", "PersistentVolumeClaim", "persistentvolumeclaims", create_only=True),
    ChildKind("batch/v1", "Job", "jobs", create_only=True),
    ChildKind("apps/v1", "Deployment", "deployments", atomic_maps=(".spec.selector.matchLabels",)),
    ChildKind("v1", "Service", "services", atomic_maps=(".spec.selector",)),
    # spec.access: before the route they attach to, so a new route is never served without its keys.
    ChildKind(
        "gateway.envoyproxy.io/v1alpha1",
        "SecurityPolicy",
        "securitypolicies",
        requires_crd=SECURITY_POLICY_CRD,
    ),
    # spec.access's quota and scale to zero: one BackendTrafficPolicy per route (render/traffic_policy.py).
    ChildKind(
        "gateway.envoyproxy.io/v1alpha1",
        "BackendTrafficPolicy",
        "backendtrafficpolicies",
        requires_crd=TRAFFIC_POLICY_CRD,
    ),
    ChildKind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes", requires_crd=HTTPROUTE_CRD),
    ChildKind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ChildKind(
        "policy/v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        atomic_maps=(".spec.selector.matchLabels",),
    ),
    ChildKind("keda.sh/v1alpha1", "ScaledObject", "scaledobjects", requires_crd=KEDA_CRD),
    ChildKind("v1", "Pod", "pods", applied=False),
)
REQUIRED_CRDS: Final = frozenset(k.requires_crd for k in CHILD_KINDS if k.requires_crd)

# What a ModelDeployment refers to but does not own: only read (watched, every object of the kind, not
# by our label), so that a change of it (a Gateway's address) reaches the ModelDeployments naming it.
GATEWAY_CRD: Final = "gateways.gateway.networking.k8s.io"
GATEWAY: Final = ChildKind(
    "gateway.networking.k8s.io/v1", "Gateway", "gateways", requires_crd=GATEWAY_CRD, applied=False
)
REFERENCED_KINDS: Final = (GATEWAY,)


def by_kind(kind: str) -> ChildKind:
    for row in CHILD_KINDS:
        if row.kind == kind:
            return row
    raise KeyError(f"{kind} is not a child kind: add a row to children.CHILD_KINDS")


def apply_order(kind: str) -> int:
    return next(i for i, row in enumerate(CHILD_KINDS) if row.kind == kind)


def applied_kinds() -> Iterator[ChildKind]:
    return (row for row in CHILD_KINDS if row.applied)
