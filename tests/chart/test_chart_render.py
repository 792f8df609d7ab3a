"""The chart rendered offline (helm lint, helm template) with the values users set."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.chart.conftest import by_kind, documents
from tests.support.cluster import REPO_ROOT
from tests.support.helm import CHART, Helm

SECRET_READ_VERBS = {"get", "list", "watch"}


def rules_for(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {
        verb
        for rule in rules
        if group in rule["apiGroups"] and resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_helm_lint_is_clean(helm: Helm) -> None:
    result = helm.run("lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_chart_crds_are_the_repository_crds() -> None:
    """`make chart-crds` copies crds/ into the chart: the two must not drift."""
    source = {path.name: path.read_bytes() for path in (REPO_ROOT / "crds").glob("*.yaml")}
    copy = {path.name: path.read_bytes() for path in (CHART / "files" / "crds").glob("*.yaml")}
    assert source, "crds/ has no CRD"
    assert copy == source, "charts/modelplane/files/crds differs from crds/: run `make chart-crds`"


def test_rendered_crds_equal_the_sources_apart_from_labels(helm: Helm) -> None:
    rendered = {
        doc["metadata"]["name"]: doc
        for doc in by_kind(documents(helm.template()), "CustomResourceDefinition")
    }
    sources = [
        doc
        for path in sorted((REPO_ROOT / "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    assert sorted(rendered) == sorted(doc["metadata"]["name"] for doc in sources)
    for source in sources:
        crd = rendered[source["metadata"]["name"]]
        assert crd["spec"] == source["spec"]
        assert crd["metadata"]["labels"]["app.kubernetes.io/part-of"] == "modelplane"


@pytest.mark.parametrize("keep", [True, False])
def test_crds_keep_adds_the_resource_policy(helm: Helm, keep: bool) -> None:
    crds = by_kind(documents(helm.template({"crds": {"keep": keep}})), "CustomResourceDefinition")
    assert len(crds) == 3
    for crd in crds:
        annotations = crd["metadata"].get("annotations") or {}
        assert (annotations.get("helm.sh/resource-policy") == "keep") is keep


def test_crds_disabled_renders_none(helm: Helm) -> None:
    docs = documents(helm.template({"crds": {"enabled": False}}))
    assert by_kind(docs, "CustomResourceDefinition") == []
    assert by_kind(docs, "Deployment")


def test_cluster_wide_by_default_with_secrets_get_only(helm: Helm) -> None:
    docs = documents(helm.template())
    assert by_kind(docs, "Role") == []
    assert by_kind(docs, "RoleBinding") == []
    (cluster_role,) = by_kind(docs, "ClusterRole")
    rules = cluster_role["rules"]
    assert rules_for(rules, "", "secrets") == {"get"}
    assert rules_for(rules, "apps", "deployments") >= {"create", "patch", "delete", "watch"}
    assert rules_for(rules, "modelplane.io", "modeldeployments/status") == {"get", "patch"}
    assert rules_for(rules, "modelplane.io", "modeldeployments") == {"get", "list", "watch"}
    assert rules_for(rules, "events.k8s.io", "events") == {"create"}
    assert rules_for(rules, "kopf.dev", "clusterkopfpeerings")
    assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in rules)
    (binding,) = by_kind(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mp-modelplane", "namespace": "modelplane-system"}
    ]


def test_watch_namespaces_gives_a_role_per_namespace_and_no_cluster_wide_access(helm: Helm) -> None:
    docs = documents(helm.template({"watchNamespaces": ["team-a", "team-b"]}))
    roles = by_kind(docs, "Role")
    assert sorted(role["metadata"]["namespace"] for role in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in by_kind(docs, "RoleBinding")) == ["team-a", "team-b"]
    for role in roles:
        assert rules_for(role["rules"], "", "secrets") == {"get"}
        assert rules_for(role["rules"], "apps", "deployments") >= {"create", "patch", "delete"}
    # The ClusterRole that remains reads CRDs and namespaces only (cluster-scoped: a Role cannot grant them).
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert {res for rule in cluster_role["rules"] for res in rule["resources"]} == {
        "customresourcedefinitions",
        "namespaces",
    }
    assert all(set(rule["verbs"]) <= {"get", "list", "watch"} for rule in cluster_role["rules"])
    (deployment,) = by_kind(docs, "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELPLANE_WATCH_NAMESPACES"] == "team-a,team-b"


def test_operator_deployment_is_restricted_and_probed(helm: Helm) -> None:
    values = {
        "image": {"repository": "example.test/modelplane/operator", "tag": "abc123"},
        "runtime": {"image": "example.test/modelplane/runtime:def456", "defaultRequests": "cpu=200m"},
        "fieldManager": "mp-test",
    }
    (deployment,) = by_kind(documents(helm.template(values)), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "example.test/modelplane/operator:abc123"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELPLANE_HEALTH_PORT"] == str(ports["health"])
    assert env["MODELPLANE_METRICS_PORT"] == str(ports["metrics"])
    assert env["MODELPLANE_RUNTIME_IMAGE"] == "example.test/modelplane/runtime:def456"
    assert env["MODELPLANE_DEFAULT_REQUESTS"] == "cpu=200m"
    assert env["MODELPLANE_FIELD_MANAGER"] == "mp-test"
    assert env["MODELPLANE_WATCH_NAMESPACES"] == ""
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])


def test_prometheus_url_reaches_the_operator_for_kedas_triggers(helm: Helm) -> None:
    def env(values: dict[str, Any]) -> dict[str, Any]:
        (deployment,) = by_kind(documents(helm.template(values)), "Deployment")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value") for e in container["env"]}

    url = "http://prometheus-operated.observability.svc:9090"
    assert env({"prometheusUrl": url})["MODELPLANE_PROMETHEUS_URL"] == url
    assert "MODELPLANE_PROMETHEUS_URL" not in env({})  # the operator's default


def test_monitoring_objects_are_off_by_default(helm: Helm) -> None:
    kinds = {doc["kind"] for doc in documents(helm.template())}
    assert kinds.isdisjoint({"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"})
    assert "Service" in kinds


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"watchNamespace": ["a"]}, "additional properties 'watchNamespace' not allowed"),
        ({"crds": {"keepp": True}}, "at '/crds': additional properties 'keepp' not allowed"),
        ({"metrics": {"serviceMonitor": {"enable": True}}}, "at '/metrics/serviceMonitor'"),
        ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy'"),
        ({"runtime": {"defaultRequests": "cpu 100m"}}, "at '/runtime/defaultRequests'"),
    ],
)
def test_schema_rejects_bad_values_naming_the_key(helm: Helm, values: dict[str, Any], message: str) -> None:
    values_file = helm.home / "bad-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = helm.run("template", "mp", str(CHART), "-f", str(values_file), check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


def test_service_monitor_needs_the_metrics_service(helm: Helm) -> None:
    values_file = helm.home / "bad-values.yaml"
    values_file.write_text(
        yaml.safe_dump({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}})
    )
    result = helm.run("template", "mp", str(CHART), "-f", str(values_file), check=False)
    assert "metrics.serviceMonitor.enabled needs metrics.service.enabled" in result.stderr


def test_no_gateway_unless_enabled(helm: Helm) -> None:
    assert not by_kind(documents(helm.template()), "Gateway")


def test_the_gateway_has_an_http_and_an_https_listener(helm: Helm) -> None:
    values = {"gateway": {"enabled": True, "className": "modelplane", "hostname": "*.models.example"}}
    (gateway,) = by_kind(documents(helm.template(values)), "Gateway")
    assert gateway["metadata"] == {
        **gateway["metadata"],
        "name": "modelplane",
        "namespace": "modelplane-system",
    }
    assert gateway["spec"]["gatewayClassName"] == "modelplane"
    http, https = gateway["spec"]["listeners"]
    assert (http["name"], http["protocol"], http["port"]) == ("http", "HTTP", 80)
    assert (https["name"], https["protocol"], https["port"]) == ("https", "HTTPS", 443)
    assert https["tls"] == {
        "mode": "Terminate",
        "certificateRefs": [{"kind": "Secret", "name": "modelplane-gateway-tls"}],
    }
    assert {http["hostname"], https["hostname"]} == {"*.models.example"}
    assert http["allowedRoutes"] == {"namespaces": {"from": "All"}}


def test_gateway_https_only_with_a_namespace_selector(helm: Helm) -> None:
    selector = {"matchLabels": {"models": "true"}}
    values = {
        "gateway": {
            "enabled": True,
            "http": {"enabled": False},
            "allowedRoutes": "Selector",
            "namespaceSelector": selector,
            "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
        }
    }
    (gateway,) = by_kind(documents(helm.template(values)), "Gateway")
    (https,) = gateway["spec"]["listeners"]
    assert https["allowedRoutes"] == {"namespaces": {"from": "Selector", "selector": selector}}
    assert gateway["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}


@pytest.mark.parametrize(
    ("gateway", "message"),
    [
        ({"enabled": True, "allowedRoutes": "Selector"}, "gateway.namespaceSelector is required"),
        (
            {"enabled": True, "http": {"enabled": False}, "https": {"enabled": False}},
            "needs gateway.http.enabled",
        ),
        ({"enabled": True, "allowedRoutes": "Everyone"}, "allowedRoutes"),
    ],
)
def test_bad_gateway_values_fail_the_install(helm: Helm, gateway: dict[str, Any], message: str) -> None:
    values_file = helm.home / "bad.yaml"
    values_file.write_text(yaml.safe_dump({"gateway": gateway}))
    result = helm.run("template", "mp", str(CHART), "-f", str(values_file), check=False)
    assert result.returncode != 0
    assert message in result.stderr
