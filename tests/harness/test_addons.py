"""The cluster add-ons of `make addons`: metrics-server behind the aggregation layer (kubectl top,
CPU HorizontalPodAutoscalers) and the default StorageClass (local-path-provisioner)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster, wait_until
from tests.support.pods import run_once_pod

pytestmark = pytest.mark.e2e

TOP_LINE = re.compile(r"^(?P<name>\S+)\s+(?P<cpu>\d+)m\s+(?P<memory>\d+)Mi$")


def cpu_burner(image: str) -> dict[str, Any]:
    """A Deployment whose one container spins on the CPU, capped at 100m; it requests 50m."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "burner"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "burner"}},
            "template": {
                "metadata": {"labels": {"app": "burner"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "burner",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": ["python3", "-c", "while True: pass"],
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "16Mi"},
                                "limits": {"cpu": "100m", "memory": "64Mi"},
                            },
                        }
                    ],
                },
            },
        },
    }


def cpu_hpa(target_utilization: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "burner"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "burner"},
            "minReplicas": 1,
            "maxReplicas": 2,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": target_utilization},
                    },
                }
            ],
        },
    }


def top_pods(cluster: Cluster, namespace: str) -> dict[str, tuple[int, int]]:
    """`kubectl top pods`: {pod: (millicores, MiB)}; empty while metrics-server has no sample yet."""
    result = cluster.kubectl("top", "pods", "-n", namespace, "--no-headers", check=False)
    if result.returncode != 0:
        return {}
    rows = {}
    for line in result.stdout.splitlines():
        match = TOP_LINE.match(line.strip())
        assert match, f"unexpected `kubectl top pods` line: {line!r}"
        rows[match["name"]] = (int(match["cpu"]), int(match["memory"]))
    return rows


def test_metrics_api_is_served_through_the_aggregation_layer(addons: Cluster) -> None:
    apiservice = addons.get("apiservice", "v1beta1.metrics.k8s.io")
    available = {c["type"]: c["status"] for c in apiservice["status"]["conditions"]}
    assert available == {"Available": "True"}
    nodes = addons.kubectl("top", "nodes", "--no-headers").stdout.split()
    assert nodes[0] == "modelplane-node"
    assert re.fullmatch(r"\d+m", nodes[1]), nodes


def test_kubectl_top_pods_and_cpu_hpa(addons: Cluster, namespace: str, echo_image: str) -> None:
    addons.apply(cpu_burner(echo_image), namespace=namespace)
    addons.wait("deployment/burner", "condition=Available", namespace=namespace, timeout=120)

    usage = wait_until(
        "kubectl top pods to show the burner", lambda: top_pods(addons, namespace), timeout=120
    )
    [(pod, (millicores, mebibytes))] = usage.items()
    assert pod.startswith("burner-")
    assert millicores > 10, f"a spinning container capped at 100m shows {millicores}m"
    assert mebibytes > 0

    addons.apply(cpu_hpa(target_utilization=50), namespace=namespace)

    def current_utilization() -> int | None:
        status = addons.get("hpa", "burner", namespace=namespace).get("status", {})
        for metric in status.get("currentMetrics") or []:
            value = metric.get("resource", {}).get("current", {}).get("averageUtilization")
            if value is not None:
                return int(value) or None
        return None

    utilization = wait_until("the HPA to report CPU utilization", current_utilization, timeout=120)
    assert utilization > 20, f"{utilization}% of a 50m request for a container spinning up to 100m"
    conditions = {
        c["type"]: c for c in addons.get("hpa", "burner", namespace=namespace)["status"]["conditions"]
    }
    assert conditions["ScalingActive"]["status"] == "True", conditions["ScalingActive"]
    assert conditions["ScalingActive"]["reason"] == "ValidMetricFound"
    # Above its 50% target, the HPA scales the Deployment up to its maximum.
    wait_until(
        "the HPA to scale the burner to 2 replicas",
        lambda: addons.get("deployment", "burner", namespace=namespace)["spec"]["replicas"] == 2,
        timeout=120,
    )


def claim(name: str) -> dict[str, Any]:
    """A PersistentVolumeClaim without a storageClassName: the default class fills it in."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}},
    }


def volume_pod(name: str, image: str, claim_name: str, script: str) -> dict[str, Any]:
    container = {
        "name": "c",
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
    }
    volume = {"name": "data", "persistentVolumeClaim": {"claimName": claim_name}}
    return run_once_pod(name, [container], volumes=[volume])


def pod_phase(cluster: Cluster, namespace: str, name: str) -> str:
    phase: str = cluster.get("pod", name, namespace=namespace).get("status", {}).get("phase", "")
    return phase


def test_default_storage_class_binds_a_claim_that_keeps_data_across_pods(
    addons: Cluster, namespace: str, echo_image: str
) -> None:
    default_classes = [
        sc["metadata"]["name"]
        for sc in json.loads(addons.kubectl("get", "storageclass", "-o", "json").stdout)["items"]
        if sc["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class") == "true"
    ]
    assert default_classes == ["local-path"]

    token = uuid.uuid4().hex
    addons.apply(claim("data"), namespace=namespace)
    pvc = addons.get("pvc", "data", namespace=namespace)
    assert pvc["spec"]["storageClassName"] == "local-path"

    addons.apply(volume_pod("writer", echo_image, "data", f"echo {token} > /data/token"), namespace=namespace)
    wait_until("the writer pod to succeed", lambda: pod_phase(addons, namespace, "writer") == "Succeeded")
    pvc = addons.get("pvc", "data", namespace=namespace)
    assert pvc["status"]["phase"] == "Bound"
    volume_name = pvc["spec"]["volumeName"]
    volume = addons.get("pv", volume_name)
    assert volume["spec"]["storageClassName"] == "local-path"
    host_path = Path((volume["spec"].get("hostPath") or volume["spec"]["local"])["path"])
    assert (host_path / "token").read_text().strip() == token

    # A new pod on the same claim (the writer is gone) reads what the first one wrote.
    addons.kubectl("delete", "pod", "writer", "-n", namespace, "--wait=true")
    addons.apply(volume_pod("reader", echo_image, "data", "cat /data/token"), namespace=namespace)
    wait_until("the reader pod to succeed", lambda: pod_phase(addons, namespace, "reader") == "Succeeded")
    assert addons.kubectl("logs", "reader", "-n", namespace).stdout.strip() == token

    # Deleting the claim deletes the volume and its directory on the node (reclaim policy Delete).
    addons.kubectl("delete", "pod", "reader", "-n", namespace, "--wait=true")
    addons.kubectl("delete", "pvc", "data", "-n", namespace, "--wait=true")
    wait_until(
        f"{volume_name} to be deleted",
        lambda: addons.kubectl("get", "pv", volume_name, check=False).returncode != 0,
        timeout=120,
    )
    assert not host_path.exists()
