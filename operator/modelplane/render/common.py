"""Names, labels and metadata shared by every child of a ModelDeployment."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from kubernetes.utils import parse_quantity

from modelplane import spec as specs

MANAGED_BY: Final = "modelplane"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_NAME: Final = "modelplane.io/name"
LABEL_TRACK: Final = "modelplane.io/track"
ANNOTATION_APPLIED_HASH: Final = "modelplane.io/applied-hash"
ANNOTATION_DIGEST: Final = "modelplane.io/digest"  # on a model cache's claim and fill Job
# A model cache's name: NAME-cache-DIGEST[:10]-SETTINGS[:4], at most 58 characters (a Job's name is a
# label value of its pods: 63 at most).
CACHE_NAME_PREFIX_LENGTH: Final = 36
STABLE: Final = "stable"
CANARY: Final = "canary"
SHADOW: Final = "shadow"
# A shadow's pods are no pods of the model's (its Service must not send them live requests, and a
# Service's selector cannot exclude a label): they carry this label instead of LABEL_NAME.
LABEL_SHADOW_OF: Final = "modelplane.io/shadow-of"

Manifest = dict[str, Any]


def labels(md: specs.ModelDeployment, track: str | None = None) -> dict[str, str]:
    """The labels of every child; the operator finds (and prunes) its children by them."""
    result = {
        "app.kubernetes.io/name": md.name,
        "app.kubernetes.io/instance": md.name,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "modelplane",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_NAME: md.name,
    }
    if track is not None:
        result[LABEL_TRACK] = track
    return result


def selector(md: specs.ModelDeployment, track: str | None = None) -> dict[str, str]:
    if track == SHADOW:
        return {LABEL_SHADOW_OF: md.name, LABEL_TRACK: SHADOW}
    result = {LABEL_NAME: md.name}
    if track is not None:
        result[LABEL_TRACK] = track
    return result


def selector_text(md: specs.ModelDeployment) -> str:
    return ",".join(f"{key}={value}" for key, value in selector(md).items())


def pod_labels(md: specs.ModelDeployment, track: str) -> dict[str, str]:
    """The labels of a track's pods: the children's, except that shadow pods are not the model's."""
    result = labels(md, track)
    if track == SHADOW:
        del result[LABEL_NAME]
        result[LABEL_SHADOW_OF] = md.name
    return result


def owner_reference(md: specs.ModelDeployment) -> dict[str, Any]:
    return {
        "apiVersion": specs.API_VERSION,
        "kind": specs.KIND,
        "name": md.name,
        "uid": md.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(md: specs.ModelDeployment, name: str, track: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": md.namespace,
        "labels": labels(md, track),
        "ownerReferences": [owner_reference(md)],
    }


def stamp(manifest: Manifest) -> Manifest:
    """Record a hash of the rendered manifest on it, so a field we stop rendering is still a change."""
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    manifest["metadata"].setdefault("annotations", {})[ANNOTATION_APPLIED_HASH] = digest
    return manifest


def track_name(md: specs.ModelDeployment, track: str) -> str:
    """The stable track keeps the ModelDeployment's own name, so adding a canary moves nothing."""
    return md.name if track == STABLE else f"{md.name}-{track}"


def cache_name(md: specs.ModelDeployment, model: specs.Model) -> str | None:
    """The claim (and fill Job) of MODEL's cache, None when it has none: the same for every track that
    serves the digest with the same cache settings, and for every run of the operator (never generated).
    The settings are in the name so that a bigger size or another class fills a new cache, and with
    spec.model.optimize, what the fill Job's optimize step reads (it writes its result into the claim):
    other optimize settings fill a new cache, never change a filled one."""
    if model.cache is None or model.digest is None:
        return None
    cache = model.cache
    settings = f"{cache.size}|{cache.storage_class_name or ''}|{cache.access_mode}"
    if model.optimize is not None:
        optimize = (model.optimize.as_json(), model.format, model.signature or "", model.allow_pickle)
        settings += "|" + json.dumps(optimize)
    settings_hash = hashlib.sha256(settings.encode()).hexdigest()[:4]
    digest = model.digest.removeprefix("sha256:")[:10]
    return f"{md.name[:CACHE_NAME_PREFIX_LENGTH].rstrip('-.')}-cache-{digest}-{settings_hash}"


def service_name(md: specs.ModelDeployment, track: str | None = None) -> str:
    """The shared Service keeps the ModelDeployment's name; each track's own is NAME-TRACK."""
    return md.name if track is None else f"{md.name}-{track}"


def non_empty(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Drop None, empty strings and empty collections: the API server drops them too (omitempty)."""
    return {key: value for key, value in mapping.items() if value not in (None, "", [], {})}


def quantity(value: Any) -> Decimal:
    """A Kubernetes quantity ("100m", "2Gi", 1) as a number, by kubernetes' own (pure) parser; raises
    ValueError or decimal.InvalidOperation on one that is not a quantity."""
    return Decimal(parse_quantity(value))  # type: ignore[no-untyped-call]
