"""Helpers for tests that run against the real local cluster (hack/local-cluster)."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]


def make_print(target: str, *variables: str) -> str:
    """The output of `make -s TARGET` (the repo's stable entry points: kubeconfig, bin-dir, ...)."""
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", target, *variables],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def make(*targets: str) -> None:
    """Runs `make TARGETS` (each target is cached and idempotent), failing the test with its output."""
    result = subprocess.run(
        ["make", "--no-print-directory", *targets], cwd=REPO_ROOT, check=False, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise AssertionError(f"make {' '.join(targets)} failed:\n{result.stdout}\n{result.stderr}")


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    bin_dir: Path

    def kubectl(
        self,
        *args: str,
        input: str | None = None,  # noqa: A002 - named as subprocess.run names it
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(
            cmd, input=input, check=False, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def apply(
        self, manifest: str | dict[str, Any] | list[dict[str, Any]], namespace: str | None = None
    ) -> None:
        text = (
            manifest
            if isinstance(manifest, str)
            else yaml.safe_dump_all(manifest if isinstance(manifest, list) else [manifest])
        )
        ns = ["-n", namespace] if namespace else []
        self.kubectl("apply", *ns, "-f", "-", input=text)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        ns = ["-n", namespace] if namespace else []
        out = self.kubectl("get", kind, name, *ns, "-o", "json").stdout
        result: dict[str, Any] = json.loads(out)
        return result

    def wait(self, target: str, condition: str, namespace: str | None = None, timeout: int = 180) -> None:
        """`kubectl wait --for=CONDITION TARGET`: waits on the API's own state, never on a sleep."""
        ns = ["-n", namespace] if namespace else []
        self.kubectl("wait", f"--for={condition}", target, *ns, f"--timeout={timeout}s", timeout=timeout + 30)


def wait_until(what: str, predicate: Callable[[], T | None], timeout: float = 120, interval: float = 1) -> T:
    """Polls PREDICATE (a read of real state) until it returns something truthy; fails naming WHAT."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"t-{slug}-{uuid.uuid4().hex[:5]}"
