"""A model's cache (spec.model.cache): a PersistentVolumeClaim per digest, filled once by a Job that
runs the runtime image's pull into it; the model's pods mount it read-only and pull nothing.

Both are named by ``common.cache_name`` (the digest and the cache settings), never generated, so an
operator that restarts finds the claim and Job it made and makes no second. The Job's pods carry none
of the model's labels: the model's Service selects by LABEL_NAME, and a pull pod is no model server.
They carry LABEL_MANAGED_BY and LABEL_CACHE_OF instead, so that the operator's pod watch (filtered by
the one, keyed by the other: ``owner_of``) shows them: their pull's termination message says how many
bytes the cache holds.

With spec.model.optimize the Job's pod pulls in an init container and then runs the optimize step
(the Deployment's own ``optimize_container``) into the claim: it decides once, for every replica,
whether they serve the optimized form or the original, and its termination message is what
status.optimization shows. A step that fails outright (it exits non-zero, or is killed) fails the Job
at once, leaving the verified original in the claim with no record beside it: the replicas serve
the original, and status says OptimizationFailed (status.py reads it from the fill pod).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

import modelplane_contract as contract

from modelplane import spec as specs
from modelplane.render.common import (
    ANNOTATION_DIGEST,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGED_BY,
    Manifest,
    cache_name,
    metadata,
    non_empty,
    stamp,
)
from modelplane.render.deployment import (
    credentials_volumes,
    optimize_container,
    pod_security,
    pull_container,
    pull_image,
    toleration_of,
)
from modelplane.render.settings import RenderSettings

CACHE_COMPONENT: Final = "model-cache"  # app.kubernetes.io/component of the claim, the Job, its pods
LABEL_CACHE_OF: Final = "modelplane.io/cache-of"  # on the fill Job's pods (not LABEL_NAME: see above)
# Transient pull failures (the store unreachable) retried this often, with the Job's doubling back-off
# (10 s, 20 s, ... about 10 minutes in all); a permanent one (EXIT_PERMANENT) fails the Job at once.
FILL_BACKOFF_LIMIT: Final = 6


def caches(md: specs.ModelDeployment) -> Iterator[tuple[str, specs.Model]]:
    """(name, model) of every cache the spec wants, once each: tracks of one digest share it."""
    seen: set[str] = set()
    models = (md.model, md.canary.model if md.canary else None, md.shadow.model if md.shadow else None)
    for model in models:
        name = cache_name(md, model) if model is not None else None
        if name is not None and model is not None and name not in seen:
            seen.add(name)
            yield name, model


def _metadata(md: specs.ModelDeployment, model: specs.Model, name: str) -> dict[str, Any]:
    assert model.digest is not None
    meta = metadata(md, name)
    meta["labels"]["app.kubernetes.io/component"] = CACHE_COMPONENT
    meta["annotations"] = {ANNOTATION_DIGEST: model.digest}
    return meta


def persistent_volume_claim(md: specs.ModelDeployment, model: specs.Model, name: str) -> Manifest:
    assert model.cache is not None
    meta = _metadata(md, model, name)
    return stamp(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": meta,
            "spec": non_empty(
                {
                    "accessModes": [model.cache.access_mode],
                    "resources": {"requests": {"storage": model.cache.size}},
                    "storageClassName": model.cache.storage_class_name,
                }
            ),
        }
    )


def fill_job(
    md: specs.ModelDeployment,
    model: specs.Model,
    name: str,
    settings: RenderSettings,
    secret_keys: frozenset[str] = frozenset(),
) -> Manifest:
    """The Job that pulls MODEL (digest-verified) into the claim NAME, as the pod's init container
    would into its own volume, and optimizes it there with spec.model.optimize. On the runtime's
    nodes (its nodeSelector and tolerations): a ReadWriteOnce claim is bound to the node its first pod
    runs on, where the replicas then run."""
    runtime = md.runtime
    pull = pull_container(model, pull_image(md, model, settings), runtime, settings, secret_keys)
    steps: dict[str, list[dict[str, Any]]] = {"containers": [pull]}
    # A step that ends non-zero failed outright (a model that cannot be optimized ends 0, saying so):
    # no retry helps, and the original is in the claim already. After the DisruptionTarget rule: an
    # evicted pod's step is killed too, and that one is retried.
    optimize_failure: list[dict[str, Any]] = []
    if model.optimize is not None:
        steps = {"initContainers": [pull], "containers": [optimize_container(pull, model, model.optimize)]}
        optimize_failure = [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": contract.OPTIMIZE_CONTAINER_NAME,
                    "operator": "NotIn",
                    "values": [contract.EXIT_OK],
                },
            }
        ]
    meta = _metadata(md, model, name)
    pod_labels = {
        "app.kubernetes.io/name": md.name,
        "app.kubernetes.io/component": CACHE_COMPONENT,
        "app.kubernetes.io/part-of": "modelplane",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_CACHE_OF: md.name,
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(settings),
        **non_empty(
            {
                "serviceAccountName": md.service_account_name,
                "nodeSelector": dict(runtime.node_selector),
                "tolerations": [toleration_of(t) for t in runtime.tolerations],
            }
        ),
        **steps,
        "volumes": [
            {"name": contract.MODEL_VOLUME_NAME, "persistentVolumeClaim": {"claimName": name}},
            {"name": contract.TMP_VOLUME_NAME, "emptyDir": {}},
            *credentials_volumes(model, secret_keys),
        ],
    }
    return stamp(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": meta,
            "spec": {
                "backoffLimit": FILL_BACKOFF_LIMIT,
                # A wrong digest or a missing object will not pass by retrying; an evicted pod may.
                "podFailurePolicy": {
                    "rules": [
                        {
                            "action": "FailJob",
                            "onExitCodes": {
                                "containerName": contract.PULL_CONTAINER_NAME,
                                "operator": "In",
                                # The API wants them in order.
                                "values": sorted({contract.EXIT_PERMANENT, contract.EXIT_USAGE}),
                            },
                        },
                        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                        *optimize_failure,
                    ]
                },
                "template": {"metadata": {"labels": pod_labels}, "spec": pod},
            },
        }
    )


def mounted_claims(pod_spec: Mapping[str, Any] | None) -> frozenset[str]:
    """The claims a pod (or a Deployment's pod template) mounts."""
    return frozenset(
        str(volume["persistentVolumeClaim"].get("claimName"))
        for volume in (pod_spec or {}).get("volumes") or []
        if isinstance(volume.get("persistentVolumeClaim"), Mapping)
    )


def owner_of(labels: Mapping[str, str]) -> str | None:
    """The ModelDeployment a watched object belongs to: its LABEL_NAME, or for a fill Job's pod (which
    must not carry that label), its LABEL_CACHE_OF."""
    return labels.get(LABEL_NAME) or labels.get(LABEL_CACHE_OF)


def is_fill_pod(obj: Mapping[str, Any]) -> bool:
    """A pod of a model cache's fill Job (not one of the model's own pods)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return obj.get("kind") == "Pod" and LABEL_CACHE_OF in labels and LABEL_NAME not in labels
