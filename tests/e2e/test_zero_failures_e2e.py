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
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.llm_models import write_tiny_gguf
from tests.support.cluster import Cluster, wait_until
from tests.support.examples import credentials_secret
from tests.support.gateway import GATEWAY, gateway_address, wait_routed
from tests.support.modeldeployments import children, service_url, wait_ready, wait_service
from tests.support.models import SklearnModel
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e

NAME = "steady"
LLM = "chat"
LLM_CONTEXT = 512
STREAM_TOKENS = 48
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


@dataclass(frozen=True)
class TinyLlm:
    key: str
    digest: str


@pytest.fixture
def tiny_llms(s3: S3Server, tmp_path: Path) -> list[TinyLlm]:
    """Two tiny random GGUF language models (written here, no download) in S3."""
    models = []
    for seed in (0, 1):
        path = write_tiny_gguf(tmp_path / f"tiny-{seed}.gguf", context_length=LLM_CONTEXT, seed=seed)
        key = f"zero-failures/tiny-{seed}.gguf"
        models.append(TinyLlm(key, s3.upload(key, path.read_bytes())))
    return models


def llm_md(model: TinyLlm) -> dict[str, Any]:
    return {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": LLM},
        "spec": {
            "model": {
                "uri": f"s3://modelplane/{model.key}",
                "format": "gguf",
                "digest": model.digest,
                "credentialsSecret": "s3-credentials",
            },
            "replicas": 2,
            "runtime": {"llm": {"contextLength": LLM_CONTEXT}},
        },
    }


@dataclass
class Load:
    """CLIENTS threads posting v1 predictions to the Service over kept-alive connections."""

    host: str
    path: str
    body: bytes
    answers: list[list[Any]]  # every prediction a served model may give
    llm_host: str | None  # where the SSE streams go; None: no stream
    port: int = 80
    phase: str = "start"
    totals: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    streams: Counter[str] = field(default_factory=Counter)
    streams_failed: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for index in range(CLIENTS):
            thread = threading.Thread(target=self._client, name=f"client-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if self.llm_host is not None:
            streamer = threading.Thread(target=self._streamer, name="sse", daemon=True)
            streamer.start()
            self._threads.append(streamer)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT_SECONDS + 5)

    def _client(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        connection = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT_SECONDS)
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

    def _streamer(self) -> None:
        """One server-sent-event stream after another (chat completions) through the LLM's Service."""
        deadline = time.monotonic() + MAX_SECONDS
        assert self.llm_host is not None
        connection = http.client.HTTPConnection(self.llm_host, 80, timeout=REQUEST_TIMEOUT_SECONDS)
        body = json.dumps(
            {
                "model": LLM,
                "messages": [{"role": "user", "content": "Count to ten."}],
                "stream": True,
                "max_tokens": STREAM_TOKENS,
            }
        ).encode()
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if self._stop.is_set() or time.monotonic() > deadline:
                break
            phase = self.phase
            failure = None
            try:
                connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                if response.status != 200:
                    failure = f"SSE HTTP {response.status}: {response.read()[:200]!r}"
                else:
                    events = [line for line in response.read().split(b"\n") if line.startswith(b"data: ")]
                    if not events or events[-1] != b"data: [DONE]":
                        failure = f"SSE stream without [DONE]: {events[-2:]!r}"
                    elif any(b'"error"' in event for event in events):
                        failure = f"SSE error event: {[e for e in events if b'error' in e][:1]!r}"
                    elif len(events) < 3:
                        failure = f"SSE stream of {len(events)} events"
            except (OSError, http.client.HTTPException) as error:
                failure = f"SSE {type(error).__name__}: {error}"
                connection.close()
            self._record(phase, failure, stream=True)
        connection.close()

    def _record(self, phase: str, failure: str | None, *, stream: bool = False) -> None:
        totals, failed = (self.streams, self.streams_failed) if stream else (self.totals, self.failed)
        with self._lock:
            totals[phase] += 1
            if failure is not None:
                failed[phase] += 1
                if len(self.failures) < FAILURES_KEPT:
                    self.failures.append(f"{phase}: {failure}")


def settled(cluster: Cluster, namespace: str, name: str = NAME) -> bool:
    """Ready for the current generation, every Deployment rolled out, and every pod that was ending
    gone (so its drain and exit happened under the load of this change)."""
    deployments = children(cluster, namespace, name, "deployment")
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
    pods = children(cluster, namespace, name, "pod")
    if len(pods) != wanted or any(pod["metadata"].get("deletionTimestamp") for pod in pods):
        return False
    return all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])
        for pod in pods
    )


def test_changes_under_load_fail_no_request(
    cluster: Cluster,
    namespace: str,
    operator: Path,
    s3: S3Server,
    iris_models: dict[str, SklearnModel],
    tiny_llms: list[TinyLlm],
) -> None:
    v1, v2 = iris_models["v1"], iris_models["v2"]
    cluster.apply([credentials_secret(s3), steady_md(v1, 3), llm_md(tiny_llms[0])], namespace)
    for name in (NAME, LLM):
        wait_ready(cluster, namespace, name)
        wait_until(
            f"{name} settled", partial(settled, cluster, namespace, name), timeout=CHANGE_TIMEOUT_SECONDS
        )
        wait_service(cluster, namespace, name)  # a new Service: the one wait that may retry connecting

    url = service_url(cluster, namespace, NAME)
    load = Load(
        host=url.removeprefix("http://"),
        path=f"/v1/models/{NAME}:predict",
        body=json.dumps({"instances": v1.sample}).encode(),
        answers=[v1.expected(), v2.expected()],
        llm_host=service_url(cluster, namespace, LLM).removeprefix("http://"),
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
        ("roll the LLM to a new model", llm_md(tiny_llms[1])),
    ]
    run_under_load(cluster, namespace, load, changes)
    assert load.streams["roll the LLM to a new model"] >= 1, "no stream ran through the LLM's rollout"


def run_under_load(
    cluster: Cluster, namespace: str, load: Load, changes: list[tuple[str, dict[str, Any]]]
) -> None:
    """Makes each change under LOAD, one after the other, each until settled; prints the record the
    issue asks for (every request and stream, by the change it started under), and fails on any
    failed request or stream."""
    load.start()
    try:
        for phase, body in changes:
            load.phase = phase
            name = body["metadata"]["name"]
            cluster.apply(body, namespace)
            wait_ready(cluster, namespace, name, timeout=CHANGE_TIMEOUT_SECONDS)
            wait_until(
                f"{phase}: settled",
                partial(settled, cluster, namespace, name),
                timeout=CHANGE_TIMEOUT_SECONDS,
            )
        load.phase = "after"
    finally:
        load.stop()
    print(f"\n{'change':<40} {'requests':>9} {'failed':>7} {'streams':>8} {'failed':>7}")  # noqa: T201
    for phase, _ in changes:
        counts = (load.totals[phase], load.failed[phase], load.streams[phase], load.streams_failed[phase])
        print(f"{phase:<40} {counts[0]:>9} {counts[1]:>7} {counts[2]:>8} {counts[3]:>7}")  # noqa: T201
    totals = [sum(c.values()) for c in (load.totals, load.failed, load.streams, load.streams_failed)]
    print(f"{'total':<40} {totals[0]:>9} {totals[1]:>7} {totals[2]:>8} {totals[3]:>7}")  # noqa: T201
    for line in load.failures:
        print(line)  # noqa: T201
    for phase, _ in changes:
        assert load.totals[phase] >= CLIENTS, f"{phase}: too few requests to tell ({load.totals[phase]})"
    assert totals[1] == totals[3] == 0, load.failures


def test_a_rollout_through_the_gateway_fails_no_request(
    cluster: Cluster,
    namespace: str,
    operator: Path,
    gateway_up: None,
    s3: S3Server,
    iris_models: dict[str, SklearnModel],
) -> None:
    """The first change above, with the same load through the Gateway's Envoy instead of the Service:
    Envoy keeps its own connections to the pods, and learns of endpoints leaving a moment after
    kube-proxy does."""
    v1, v2 = iris_models["v1"], iris_models["v2"]

    def routed_md(model: SklearnModel) -> dict[str, Any]:
        body = steady_md(model, 3)
        body["spec"]["gateway"] = GATEWAY
        return body

    cluster.apply([credentials_secret(s3), routed_md(v1)], namespace)
    wait_ready(cluster, namespace, NAME)
    wait_until("settled", partial(settled, cluster, namespace, NAME), timeout=CHANGE_TIMEOUT_SECONDS)
    address = gateway_address(cluster)
    wait_routed(f"http://{address}/{namespace}/{NAME}")  # a new route: Envoy's own 404/503 waited out
    load = Load(
        host=address,
        path=f"/{namespace}/{NAME}/v1/models/{NAME}:predict",
        body=json.dumps({"instances": v1.sample}).encode(),
        answers=[v1.expected(), v2.expected()],
        llm_host=None,
    )
    run_under_load(cluster, namespace, load, [("roll to a new model through the Gateway", routed_md(v2))])
