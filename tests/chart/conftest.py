"""What the chart's tests share: its documents by kind, the values and the `helm install` of a release on
the local cluster, and the host operator stopped while the chart's operator is under test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cluster import Cluster, make, make_print
from tests.support.helm import CHART, Helm


def documents(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def image_ref(name: str) -> str:
    """The reference of an image `make images` built into the node (built first when its sources changed)."""
    make("image", f"NAME={name}")
    return make_print("image-ref", f"NAME={name}")


def image_values(name: str) -> dict[str, str]:
    """The chart's image.repository/tag of an image `make images` built into the node."""
    repository, _, tag = image_ref(name).rpartition(":")
    return {"repository": repository, "tag": tag}


def release_values(watch_namespaces: list[str], field_manager: str) -> dict[str, Any]:
    """Values for this cluster: the images `make images` built; WATCH_NAMESPACES watched (all when empty);
    the CRDs left as `make install-crds` put them (they are cluster-wide; other tests use them)."""
    return {
        "image": image_values("operator"),
        "runtime": {"image": image_ref("runtime")},
        "watchNamespaces": watch_namespaces,
        "crds": {"enabled": False},
        "fieldManager": field_manager,
    }


def install(
    helm: Helm, release: str, namespace: str, values: dict[str, Any], workdir: Path, *extra: str
) -> None:
    """`helm install RELEASE` of the chart into NAMESPACE with VALUES (a values file in WORKDIR, so types
    stay exact) and EXTRA flags."""
    values_file = workdir / "install-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    helm.run("install", release, str(CHART), "-n", namespace, "-f", str(values_file), *extra)


@contextmanager
def host_operator_stopped() -> Iterator[None]:
    """The operator `make operator-up` runs on the host watches every namespace: stopped while the chart's
    operator is under test (so what reconciles the test's models is the chart's), started again after."""
    make("operator-down")
    try:
        yield
    finally:
        make("operator-up")


@pytest.fixture
def no_host_operator(cluster: Cluster) -> Iterator[None]:
    """The host operator stopped for the test (a module's fixture uses `host_operator_stopped` itself)."""
    with host_operator_stopped():
        yield
