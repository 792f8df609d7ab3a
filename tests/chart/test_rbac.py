"""RBAC against what the operator does: the table of child kinds, the informers' kinds and kopf's
registry (peering) on one side; the chart's ClusterRole/Role (helm template) and
operator/deploy/host-operator.yaml on the other. Adding a child kind without its RBAC, or a watch
without list and watch, fails here."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

import kopf
import pytest
import yaml
from modelplane import children, informer
from modelplane import spec as specs

from tests.chart.conftest import by_kind, documents
from tests.support.cluster import REPO_ROOT
from tests.support.helm import Helm

HOST_OPERATOR = REPO_ROOT / "operator" / "deploy" / "host-operator.yaml"
Need = tuple[str, str, str]  # (apiGroup, resource, verb)


@functools.cache
def kopf_resources(watch_namespaces: str = "") -> set[tuple[str, str]]:
    """(group, plural) of every resource a kopf handler of ours indexes or watches (none now), as
    registered by the operator run with MODELPLANE_WATCH_NAMESPACES=WATCH_NAMESPACES (in a process of
    its own: the peering watch depends on it).

    kopf (1.45) has no public way to list a registry's handlers: this reads OperatorRegistry's
    _indexing and _watching, here only, and fails loudly if a kopf upgrade renames them."""
    script = """
import json, kopf
from modelplane import handlers
registry = kopf.get_default_registry()
for private in ("_indexing", "_watching"):
    assert hasattr(registry, private), f"kopf's OperatorRegistry has no {private}: update kopf_resources"
found = sorted({
    (h.selector.group or "", h.selector.plural or h.selector.any_name)
    for h in [*registry._indexing.get_all_handlers(), *registry._watching.get_all_handlers()]
})
print(json.dumps(found))
"""
    env = {**os.environ, "MODELPLANE_WATCH_NAMESPACES": watch_namespaces}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True, timeout=120
    )
    return {(group, plural) for group, plural in json.loads(result.stdout)}


def watched_resources(watch_namespaces: str = "") -> set[tuple[str, str]]:
    """(group, plural) of every resource the operator lists and watches: its informers' (peering's
    included: kopf itself watches it too) and any of a kopf handler."""
    namespaces = tuple(filter(None, watch_namespaces.split(",")))
    return informer.resources(namespaces) | kopf_resources(watch_namespaces)


def needs(watch_namespaces: str = "") -> set[Need]:
    """What the operator needs: the table's verbs on every child kind, list and watch on every
    resource watched (by an informer or by kopf), and its few other calls (kube.py)."""
    watched = watched_resources(watch_namespaces)
    result = {(row.group, row.plural, verb) for row in children.CHILD_KINDS for verb in row.verbs}
    result |= {(group, plural, verb) for group, plural in watched for verb in ("list", "watch")}
    result |= {
        (specs.GROUP, f"{specs.PLURAL}/status", "patch"),
        ("", "secrets", "get"),
        ("events.k8s.io", "events", "create"),
        ("", "events", "list"),  # Kube.provisioning_failure
    }
    return result


def granted(roles: Iterable[dict[str, Any]]) -> set[Need]:
    return {
        (group, resource, verb)
        for role in roles
        for rule in role.get("rules") or []
        for group in rule.get("apiGroups") or []
        for resource in rule.get("resources") or []
        for verb in rule.get("verbs") or []
    }


def test_every_child_kind_is_watched() -> None:
    watched = watched_resources()
    missing = {(row.group, row.plural) for row in children.CHILD_KINDS} - watched
    assert not missing, f"child kinds without a watch: {missing}"
    assert (specs.GROUP, specs.PLURAL) in watched
    assert "apiextensions.k8s.io" in {group for group, _ in watched}  # CRDs that arrive later are noticed
    assert ("kopf.dev", "clusterkopfpeerings") in watched  # kopf's peering: which operator is active


def test_kopf_watches_nothing_for_a_handler_and_indexes_nothing() -> None:
    """No kopf index (its start is quadratic in the objects) and no kopf watch: the informers' own."""
    assert kopf_resources() == set()
    assert kopf_resources("team-a") == set()


def test_the_operator_uses_no_handler_that_writes_to_its_objects() -> None:
    """Indexing and watching handlers only: kopf then adds no finalizer, status or annotation."""
    from modelplane import handlers  # noqa: F401 - registers the handlers

    registry = kopf.get_default_registry()
    assert not list(registry._changing.get_all_handlers())  # noqa: SLF001 - see kopf_resources
    assert not list(registry._spawning.get_all_handlers())  # noqa: SLF001 - see kopf_resources


def test_host_operator_rbac_grants_what_the_operator_needs() -> None:
    roles = [d for d in yaml.safe_load_all(HOST_OPERATOR.read_text()) if d and d["kind"] == "ClusterRole"]
    missing = needs() - granted(roles)
    assert not missing, f"{HOST_OPERATOR.name} lacks {sorted(missing)}"


def test_chart_cluster_wide_rbac_grants_what_the_operator_needs(helm: Helm) -> None:
    docs = documents(helm.template())
    missing = needs() - granted(by_kind(docs, "ClusterRole"))
    assert not missing, f"the chart's ClusterRole lacks {sorted(missing)}"


@pytest.mark.parametrize("namespaces", [["team-a"], ["team-a", "team-b"]])
def test_chart_namespaced_rbac_grants_what_the_operator_needs(helm: Helm, namespaces: list[str]) -> None:
    docs = documents(helm.template({"watchNamespaces": namespaces}))
    cluster_wide = granted(by_kind(docs, "ClusterRole"))
    for namespace in namespaces:
        roles = [r for r in by_kind(docs, "Role") if r["metadata"]["namespace"] == namespace]
        assert roles, f"no Role in {namespace}"
        missing = needs(",".join(namespaces)) - granted(roles) - cluster_wide
        assert not missing, f"the chart's Role in {namespace} lacks {sorted(missing)}"


def test_the_check_fails_when_a_kind_lacks_a_verb() -> None:
    """The comparison itself: a ClusterRole without delete on ScaledObjects is caught."""
    roles = [d for d in yaml.safe_load_all(HOST_OPERATOR.read_text()) if d and d["kind"] == "ClusterRole"]
    for rule in roles[0]["rules"]:
        if "scaledobjects" in rule["resources"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != "delete"]
    assert ("keda.sh", "scaledobjects", "delete") in needs() - granted(roles)
