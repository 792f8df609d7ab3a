"""The local cluster runs real pods: Deployments, Services, DNS, exec/logs/port-forward,
Pod Security admission, garbage collection, CEL validation, and only images built here."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from typing import Any

import pytest

from tests.support.cluster import Cluster, wait_until
from tests.support.pods import RESTRICTED

pytestmark = pytest.mark.e2e


def echo_deployment(image: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "echo"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "echo"}},
            "template": {
                "metadata": {"labels": {"app": "echo"}},
                "spec": {
                    "containers": [
                        {
                            "name": "echo",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/ready", "port": 8080},
                                "periodSeconds": 2,
                            },
                            "securityContext": RESTRICTED,
                        }
                    ]
                },
            },
        },
    }


ECHO_SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "echo"},
    "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": 8080}]},
}


def http_get_json(url: str, timeout: float = 5) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def reachable(url: str) -> bool:
    try:
        http_get_json(url, timeout=2)
    except OSError:
        return False
    return True


def test_deployment_pods_service_dns_logs_exec_port_forward(
    cluster: Cluster, namespace: str, echo_image: str
) -> None:
    cluster.apply([echo_deployment(echo_image, 3), ECHO_SERVICE], namespace=namespace)
    cluster.wait("deployment/echo", "condition=Available", namespace=namespace, timeout=180)
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", "app=echo", "-o", "json").stdout)
    running = [
        p
        for p in pods["items"]
        if p["status"]["phase"] == "Running" and all(c["ready"] for c in p["status"]["containerStatuses"])
    ]
    assert len(running) == 3, [p["status"] for p in pods["items"]]

    # From the host, through kube-proxy's rules for the ClusterIP, once it has synced the endpoints.
    cluster_ip = cluster.get("service", "echo", namespace)["spec"]["clusterIP"]
    wait_until("the Service to route", lambda: reachable(f"http://{cluster_ip}/probe"), timeout=60)
    seen = {http_get_json(f"http://{cluster_ip}/host")["pod"] for _ in range(30)}
    assert seen <= {p["metadata"]["name"] for p in running}
    assert seen

    # From inside a pod, by the Service's DNS name.
    pod = running[0]["metadata"]["name"]
    url = f"http://echo.{namespace}.svc.cluster.local/in-pod"
    fetch = f"import urllib.request; print(urllib.request.urlopen('{url}', timeout=5).read().decode())"
    out = cluster.kubectl("exec", "-n", namespace, pod, "--", "python3", "-c", fetch).stdout
    assert json.loads(out)["path"] == "/in-pod"

    # kubectl logs shows the server's own lines.
    logs = "".join(cluster.kubectl("logs", "-n", namespace, p["metadata"]["name"]).stdout for p in running)
    assert "http-echo listening on 8080" in logs
    assert "GET /in-pod" in logs

    # kubectl port-forward reaches a pod through the kubelet's streaming.
    port_forward = [str(cluster.bin_dir / "kubectl"), "--kubeconfig", str(cluster.kubeconfig)]
    port_forward += ["port-forward", "-n", namespace, "svc/echo", ":80"]
    with subprocess.Popen(
        port_forward, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as forward:
        try:
            assert forward.stdout is not None
            line = forward.stdout.readline()
            match = re.search(r"127\.0\.0\.1:(\d+)", line)
            assert match, line
            assert http_get_json(f"http://127.0.0.1:{match.group(1)}/forwarded")["path"] == "/forwarded"
        finally:
            forward.terminate()


def test_restricted_pod_runs_and_privileged_pod_is_refused(
    cluster: Cluster, namespace: str, echo_image: str
) -> None:
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    restricted = echo_deployment(echo_image, 1)["spec"]["template"]
    restricted_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "restricted"},
        "spec": {
            **restricted["spec"],
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        },
    }
    cluster.apply(restricted_pod, namespace=namespace)
    cluster.wait("pod/restricted", "condition=Ready", namespace=namespace, timeout=120)
    uid = cluster.kubectl("exec", "-n", namespace, "restricted", "--", "id", "-u").stdout.strip()
    assert uid == "65532"
    write = cluster.kubectl("exec", "-n", namespace, "restricted", "--", "touch", "/app/x", check=False)
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr

    privileged_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {"containers": [{"name": "c", "image": echo_image, "securityContext": {"privileged": True}}]},
    }
    refused = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(privileged_pod), check=False
    )
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in refused.stderr
    assert "privileged" in refused.stderr


def test_deleting_a_deployment_garbage_collects_its_replicaset_and_pods(
    cluster: Cluster, namespace: str, echo_image: str
) -> None:
    cluster.apply(echo_deployment(echo_image, 2), namespace=namespace)
    cluster.wait("deployment/echo", "condition=Available", namespace=namespace, timeout=180)
    assert cluster.kubectl("get", "rs,pods", "-n", namespace, "-o", "name").stdout.strip()
    cluster.kubectl("delete", "deployment", "echo", "-n", namespace, "--cascade=background", "--wait=true")
    # The garbage collector, not kubectl, removes the dependents: wait for them to go.
    wait_until(
        "the ReplicaSet and Pods to be collected",
        lambda: not cluster.kubectl("get", "rs,pods", "-n", namespace, "-o", "name").stdout.strip(),
    )


CEL_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.celtest.modelplane.io"},
    "spec": {
        "group": "celtest.modelplane.io",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.min <= self.max",
                                        "message": "spec.min must not exceed spec.max",
                                    }
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_crd_with_cel_rule_refuses_an_invalid_object(cluster: Cluster, namespace: str) -> None:
    cluster.apply(CEL_CRD)
    cluster.wait("crd/widgets.celtest.modelplane.io", "condition=Established", timeout=60)
    good = {
        "apiVersion": "celtest.modelplane.io/v1",
        "kind": "Widget",
        "metadata": {"name": "ok"},
        "spec": {"min": 1, "max": 2},
    }
    cluster.apply(good, namespace=namespace)
    bad = {**good, "metadata": {"name": "bad"}, "spec": {"min": 3, "max": 2}}
    refused = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
    assert refused.returncode != 0
    assert "spec.min must not exceed spec.max" in refused.stderr


def test_every_image_on_the_node_and_in_pods_was_built_here(cluster: Cluster, echo_image: str) -> None:
    node = cluster.get("nodes", "modelplane-node")
    node_images = [name for image in node["status"].get("images") or [] for name in image.get("names") or []]
    pods = json.loads(cluster.kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
    pod_images = [
        ref
        for pod in pods
        for status in pod["status"].get("containerStatuses", [])
        + pod["status"].get("initContainerStatuses", [])
        for ref in (status["image"], status.get("imageID", ""))
        if ref
    ]
    assert echo_image in node_images
    foreign = [ref for ref in node_images + pod_images if not ref.startswith(("localhost/", "sha256:"))]
    assert foreign == [], f"images from a registry: {foreign}"


def test_a_pull_from_a_registry_fails_loudly(cluster: Cluster, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "from-registry"},
        "spec": {
            "containers": [{"name": "c", "image": "registry.invalid/busybox:1", "imagePullPolicy": "Always"}]
        },
    }
    cluster.apply(pod, namespace=namespace)

    def pull_failure() -> str | None:
        statuses = cluster.get("pod", "from-registry", namespace)["status"].get("containerStatuses", [])
        waiting = statuses[0]["state"].get("waiting", {}) if statuses else {}
        if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
            return str(waiting.get("message", waiting["reason"]))
        return None

    message = wait_until("the pull from a registry to fail", pull_failure, timeout=120)
    assert "registry.invalid/busybox:1" in message
