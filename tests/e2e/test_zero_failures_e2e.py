"""Zero failed requests through changes: a steady load through the Service while the model rolls to a
new version, gets a canary, promotes it, gets another and rolls it back, scales 3 -> 1 and 1 -> 3.

Every request is counted under the change during which it started; a refused or reset connection,
a timeout, a non-200 answer or a wrong prediction is a failure. The clients keep their connections
alive and never retry, as a user's client would. What makes this pass is the product's: the runtime
drains on SIGTERM (readiness fails, answers close their connection, connections are still accepted
while the endpoints drop the pod), the rendered termination grace and rollout parameters.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster, wait_until
from tests.support.examples import credentials_secret
from tests.support.modeldeployments import children, service_url, wait_ready, wait_service
from tests.support.models import SklearnModel
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e

NAME = "steady"
CLIENTS = 8
# Bounds of the load: each client pauses between requests (a steady load that leaves the shared
# machine's CPUs to the rollouts) and stops at a deadline and a count, whatever happens.
PAUSE_SECONDS = 0.02
MAX_SECONDS = 1500.0
MAX_REQUESTS_PER_CLIENT = 200_000
REQUEST_TIMEOUT_SECONDS = 30.0
CHANGE_TIMEOUT_SECONDS = 420.0
FAILURES_KEPT = 20


def model_spec(model: SklearnModel) -> dict[str, Any]:
    return {
        "uri": f"s3://modelplane/{model.key}",
        "format": "sklearn",
        "digest": model.digest,
        "credentialsSecret": "s3-credentials",
    }


def steady_md(
    model: SklearnModel, replicas: int, canary: SklearnModel | None = None, strategy: str = "RollingUpdate"
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": model_spec(model),
        "replicas": replicas,
        "rollout": {"strategy": strategy},
    }
    if canary is not None:
        spec["rollout"] = {
            "strategy": "Canary",
            "canary": {"trafficPercent": 34, "model": model_spec(canary)},
        }
    return {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": NAME},
        "spec": spec,
    }


@dataclass
class Load:
    """CLIENTS threads posting v1 predictions to the Service over kept-alive connections."""

    host: str
    path: str
    body: bytes
    answers: list[list[Any]]  # every prediction a served model may give
    phase: str = "start"
    totals: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for index in range(CLIENTS):
            thread = threading.Thread(target=self._client, name=f"client-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT_SECONDS + 5)

    def _client(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        connection = http.client.HTTPConnection(self.host, 80, timeout=REQUEST_TIMEOUT_SECONDS)
        headers = {"Content-Type": "application/json"}
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if self._stop.is_set() or time.monotonic() > deadline:
                break
            phase = self.phase
            failure = None
            try:
                # http.client reconnects by itself after an answer that closed its connection, and
                # never resends a request: a dead connection is this request's failure.
                connection.request("POST", self.path, self.body, headers)
                response = connection.getresponse()
                data = response.read()
                if response.status != 200:
                    failure = f"HTTP {response.status}: {data[:200]!r}"
                elif json.loads(data)["predictions"] not in self.answers:
                    failure = f"unexpected predictions {data[:200]!r}"
            except (OSError, http.client.HTTPException) as error:
                failure = f"{type(error).__name__}: {error}"
                connection.close()
            self._record(phase, failure)
            time.sleep(PAUSE_SECONDS)
        connection.close()

    def _record(self, phase: str, failure: str | None) -> None:
        with self._lock:
            self.totals[phase] += 1
            if failure is not None:
                self.failed[phase] += 1
                if len(self.failures) < FAILURES_KEPT:
                    self.failures.append(f"{phase}: {failure}")


def settled(cluster: Cluster, namespace: str) -> bool:
    """Ready for the current generation, every Deployment rolled out, and every pod that was ending
    gone (so its drain and exit happened under the load of this change)."""
    deployments = children(cluster, namespace, NAME, "deployment")
    wanted = 0
    for deployment in deployments:
        spec, status = deployment["spec"], deployment.get("status") or {}
        replicas = spec["replicas"]
        wanted += replicas
        if status.get("observedGeneration") != deployment["metadata"]["generation"]:
            return False
        if not (status.get("replicas", 0) == status.get("updatedReplicas", 0) == replicas):
            return False
        if status.get("readyReplicas", 0) != replicas:
            return False
    pods = children(cluster, namespace, NAME, "pod")
    if len(pods) != wanted or any(pod["metadata"].get("deletionTimestamp") for pod in pods):
        return False
    return all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])
        for pod in pods
    )


def test_changes_under_load_fail_no_request(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server, iris_models: dict[str, SklearnModel]
) -> None:
    v1, v2 = iris_models["v1"], iris_models["v2"]
    cluster.apply([credentials_secret(s3), steady_md(v1, 3)], namespace)
    wait_ready(cluster, namespace, NAME)
    wait_until("the model settled", lambda: settled(cluster, namespace), timeout=CHANGE_TIMEOUT_SECONDS)
    wait_service(cluster, namespace, NAME)  # a new Service: the one wait that may retry connecting

    url = service_url(cluster, namespace, NAME)
    load = Load(
        host=url.removeprefix("http://"),
        path=f"/v1/models/{NAME}:predict",
        body=json.dumps({"instances": v1.sample}).encode(),
        answers=[v1.expected(), v2.expected()],
    )
    # "Roll back" is the CRD's: removing a canary (spec.rollout.canary); rolling to a previous model
    # is a rollout like the first one.
    changes = [
        ("roll to a new model", steady_md(v2, 3)),
        ("add a canary", steady_md(v2, 3, canary=v1)),
        ("promote the canary", steady_md(v1, 3, strategy="Canary")),
        ("add a canary again", steady_md(v1, 3, canary=v2)),
        ("roll back the canary", steady_md(v1, 3, strategy="Canary")),
        ("scale 3 -> 1", steady_md(v1, 1, strategy="Canary")),
        ("scale 1 -> 3", steady_md(v1, 3, strategy="Canary")),
    ]
    load.start()
    try:
        for phase, body in changes:
            load.phase = phase
            cluster.apply(body, namespace)
            wait_ready(cluster, namespace, NAME, timeout=CHANGE_TIMEOUT_SECONDS)
            wait_until(
                f"{phase}: settled", lambda: settled(cluster, namespace), timeout=CHANGE_TIMEOUT_SECONDS
            )
        load.phase = "after"
    finally:
        load.stop()

    print(f"\n{'change':<22} {'requests':>9} {'failed':>7}")  # noqa: T201 - the record the issue asks for
    for phase, _ in changes:
        print(f"{phase:<22} {load.totals[phase]:>9} {load.failed[phase]:>7}")  # noqa: T201
    print(f"{'total':<22} {sum(load.totals.values()):>9} {sum(load.failed.values()):>7}")  # noqa: T201
    for line in load.failures:
        print(line)  # noqa: T201
    for phase, _ in changes:
        assert load.totals[phase] >= CLIENTS, f"{phase}: too few requests to tell ({load.totals[phase]})"
    assert sum(load.failed.values()) == 0, load.failures
