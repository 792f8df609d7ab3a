"""Fixtures of the chart tests: the harness's tools (helm, promtool, third-party CRDs) and helm runners."""

from __future__ import annotations

from typing import Any

import yaml

from tests.harness.conftest import bin_dir, crd_dir, helm_bin, prometheus_bin_dir, third_party_crds
from tests.support.cluster import make, make_print
from tests.support.helm import CHART, Helm, cluster_helm, helm

# Helm and CHART stay importable from here (the chart tests import them so).
__all__ = [
    "CHART",
    "Helm",
    "bin_dir",
    "cluster_helm",
    "crd_dir",
    "helm",
    "helm_bin",
    "prometheus_bin_dir",
    "third_party_crds",
]


def documents(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def image_values(name: str) -> dict[str, str]:
    """The chart's image.repository/tag of an image `make images` built into the node."""
    make("image", f"NAME={name}")
    repository, _, tag = make_print("image-ref", f"NAME={name}").rpartition(":")
    return {"repository": repository, "tag": tag}
