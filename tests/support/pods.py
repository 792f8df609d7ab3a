"""Pods the tests run themselves, as the operator runs its own: containers under the restricted Pod
Security profile with a read-only root, and `modelplane-runtime pull` filling a model volume."""

from __future__ import annotations

from typing import Any

import modelplane_contract as contract

# A container's securityContext under the restricted profile, with a read-only root filesystem.
RESTRICTED: dict[str, Any] = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def run_once_pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    """A pod NAME that runs CONTAINERS to their end, never restarted, with SPEC's other fields."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", **spec, "containers": containers},
    }


def pull_pod(
    name: str,
    image: str,
    uri: str,
    model_volume: dict[str, Any],
    *,
    digest: str | None = None,
    model_dir: str = contract.MODEL_DIR,
    dest: str | None = None,
    env: list[dict[str, Any]] | None = None,
    env_from: list[dict[str, Any]] | None = None,
    then: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A pod that pulls URI (its digest verified when given) into DEST (MODEL_DIR itself by default) on
    MODEL_VOLUME (a volume source: an emptyDir, a claim) mounted at MODEL_DIR, with a scratch emptyDir at
    the runtime's TMP_DIR, and never restarts. With THEN (a container, given the same mounts), the pull is
    its init container, as the operator renders it; without, the pull is the pod's one container."""
    args = [contract.PULL_SUBCOMMAND, "--uri", uri, "--dest", dest or model_dir]
    mounts = [
        {"name": contract.MODEL_VOLUME_NAME, "mountPath": model_dir},
        {"name": contract.TMP_VOLUME_NAME, "mountPath": contract.TMP_DIR},
    ]
    pull: dict[str, Any] = {
        "name": contract.PULL_CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": args + (["--digest", digest] if digest else []),
        **({"env": env} if env else {}),
        **({"envFrom": env_from} if env_from else {}),
        "securityContext": RESTRICTED,
        "volumeMounts": mounts,
    }
    volumes = [
        {"name": contract.MODEL_VOLUME_NAME, **model_volume},
        {"name": contract.TMP_VOLUME_NAME, "emptyDir": {}},
    ]
    if then:
        return run_once_pod(name, [{**then, "volumeMounts": mounts}], initContainers=[pull], volumes=volumes)
    return run_once_pod(name, [pull], volumes=volumes)
