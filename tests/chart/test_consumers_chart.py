"""The chart and the host operator's RBAC for spec.access.consumers: the consumer namespace's Role
(list, for the metadata-only LIST of kube.consumer_secrets), its ReferenceGrant, the operator's env."""

from __future__ import annotations

import yaml

from tests.chart.conftest import by_kind, documents
from tests.chart.test_rbac import HOST_OPERATOR, granted
from tests.support.helm import Helm

LIST_SECRETS = ("", "secrets", "list")


def test_without_a_consumer_namespace_the_chart_grants_no_secret_list(helm: Helm) -> None:
    docs = documents(helm.template())
    assert LIST_SECRETS not in granted([*by_kind(docs, "ClusterRole"), *by_kind(docs, "Role")])
    assert not by_kind(docs, "ReferenceGrant")
    [deployment] = by_kind(docs, "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELPLANE_CONSUMER_NAMESPACE"] == ""


def test_the_consumer_namespace_gets_a_list_role_and_a_reference_grant(helm: Helm) -> None:
    values = {"consumers": {"namespace": "consumers", "referenceGrantNamespaces": ["team-a", "team-b"]}}
    docs = documents(helm.template(values))
    roles = [r for r in by_kind(docs, "Role") if r["metadata"]["namespace"] == "consumers"]
    assert granted(roles) == {LIST_SECRETS}
    [binding] = [b for b in by_kind(docs, "RoleBinding") if b["metadata"]["namespace"] == "consumers"]
    assert binding["roleRef"]["name"] == roles[0]["metadata"]["name"]
    [grant] = by_kind(docs, "ReferenceGrant")
    assert grant["metadata"]["namespace"] == "consumers"
    assert [f["namespace"] for f in grant["spec"]["from"]] == ["team-a", "team-b"]
    assert {f["kind"] for f in grant["spec"]["from"]} == {"SecurityPolicy"}
    assert grant["spec"]["to"] == [{"group": "", "kind": "Secret"}]
    [deployment] = by_kind(docs, "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELPLANE_CONSUMER_NAMESPACE"] == "consumers"


def test_the_host_operator_may_list_secrets_only_in_the_consumer_namespace() -> None:
    docs = [d for d in yaml.safe_load_all(HOST_OPERATOR.read_text()) if d]
    assert LIST_SECRETS not in granted([d for d in docs if d["kind"] == "ClusterRole"])
    [role] = [d for d in docs if d["kind"] == "Role"]
    assert role["metadata"]["namespace"] == "modelplane-consumers"
    assert granted([role]) == {LIST_SECRETS}
