"""Per-consumer API keys, quotas and usage (spec.access.consumers) on the local cluster: the host
operator, Envoy Gateway and Envoy from images built here (make gateway), consumer Secrets in the
operator's consumer namespace as a platform team keeps them, and clients on the host calling the
model's status.url over HTTPS through Envoy.

Every consumer name carries the test namespace's suffix: the consumer namespace is shared.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import modelplane_contract as contract
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import Cluster, make, wait_until
from tests.support.examples import credentials_secret
from tests.support.modeldeployments import children, condition, s3_model_deployment, wait_ready, wait_reason
from tests.support.models import SklearnModel
from tests.support.prometheus import PrometheusServer, dashboard_queries
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e
log = logging.getLogger(__name__)

CONSUMERS = (
    "modelplane-consumers"  # the host operator's consumer namespace (operator/deploy/host-operator.yaml)
)
GATEWAY = {"name": "modelplane", "namespace": "modelplane-system"}
TLS_SECRET = "modelplane-gateway-tls"
ENVOY_NAMESPACE = "envoy-gateway-system"
ENVOY_PODS = f"gateway.envoyproxy.io/owning-gateway-name={GATEWAY['name']}"
ENVOY_STATS_PORT = 19001  # Envoy Gateway's Prometheus listener on every Envoy pod
# Requests per hour per consumer: Envoy refills a bucket once per unit, and within a test's seconds an
# hourly refill is unlikely to land (a per-minute one would, one run in ten).
QUOTA = 20
REVOKED_WITHIN_SECONDS = 30.0


@pytest.fixture(scope="module")
def gateway_up() -> None:
    make("gateway")  # idempotent: e2e-prerequisites brought it up


@dataclass
class Consumer:
    name: str
    key: str
    key_id: str = "1"

    def secret(self, groups: tuple[str, ...] = ()) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": self.name,
            "namespace": CONSUMERS,
            "labels": {"modelplane.io/consumer": ""},
        }
        if groups:
            meta["annotations"] = {"modelplane.io/groups": ",".join(groups)}
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta,
            "type": "Opaque",
            "stringData": {f"{self.name}.{self.key_id}": self.key},
        }

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def new_consumer(name: str) -> Consumer:
    return Consumer(name, secrets.token_urlsafe(24))


@pytest.fixture
def suffix(namespace: str) -> str:
    return namespace.rsplit("-", 1)[-1][:8]


@pytest.fixture
def consumer_grant(cluster: Cluster, namespace: str) -> Iterator[None]:
    """The platform team's part: a ReferenceGrant that lets the test namespace's SecurityPolicies use
    the consumer Secrets."""
    cluster.kubectl("create", "namespace", CONSUMERS, check=False)  # the host operator made it already
    name = f"models-{namespace}"[:63]
    grant: dict[str, Any] = {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": name, "namespace": CONSUMERS},
        "spec": {
            "from": [{"group": "gateway.envoyproxy.io", "kind": "SecurityPolicy", "namespace": namespace}],
            "to": [{"group": "", "kind": "Secret"}],
        },
    }
    cluster.apply(grant)
    yield
    cluster.kubectl("delete", "referencegrant", "-n", CONSUMERS, name, check=False)


def delete_consumers(cluster: Cluster, *consumers: Consumer) -> None:
    cluster.kubectl("delete", "secret", "-n", CONSUMERS, *(c.name for c in consumers), "--ignore-not-found")


def gateway_tls(cluster: Cluster, tmp_path: Path) -> ssl.SSLContext:
    secret = cluster.get("secret", TLS_SECRET, GATEWAY["namespace"])
    path = tmp_path / "gateway-ca.crt"
    path.write_bytes(base64.b64decode(secret["data"]["tls.crt"]))
    return ssl.create_default_context(cafile=str(path))


def policy_accepted(cluster: Cluster, namespace: str, name: str, kind: str) -> None:
    """Envoy Gateway accepted the policy for the route (its ancestors' Accepted condition)."""

    def accepted() -> bool:
        (policy,) = children(cluster, namespace, name, kind)
        ancestors = (policy.get("status") or {}).get("ancestors") or []
        conditions = [c for a in ancestors for c in a.get("conditions") or [] if c["type"] == "Accepted"]
        if any(c["status"] == "False" for c in conditions):
            raise AssertionError(f"{kind} {name} refused: {conditions}")
        return bool(conditions) and all(c["status"] == "True" for c in conditions)

    wait_until(f"{kind} {namespace}/{name} accepted", accepted, timeout=60, interval=0.5)


def wait_routed(client: httpx.Client, url: str) -> httpx.Response:
    """Until Envoy has the route (before, Envoy itself answers 404): the first other answer, whatever
    it is, is the caller's to judge."""

    def routed() -> httpx.Response | None:
        response = client.get(f"{url}{contract.READY_PATH}")
        gateway_404 = response.status_code == 404 and response.headers.get("server") == "envoy"
        return None if gateway_404 else response

    return wait_until(f"Envoy to route {url}", routed, timeout=60, interval=0.5)


def predict(client: httpx.Client, url: str, headers: dict[str, str], rows: list[Any]) -> httpx.Response:
    return client.post(f"{url}/v1/models/iris:predict", json={"instances": rows}, headers=headers)


def runtime_usage(pod_ip: str) -> dict[tuple[str, str], float]:
    """(consumer, code) -> the runtime's modelplane_consumer_requests_total, read from the pod."""
    text = httpx.get(f"http://{pod_ip}:{contract.HTTP_PORT}{contract.METRICS_PATH}", timeout=10).text
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == contract.METRIC_CONSUMER_REQUESTS_TOTAL:
                found[(sample.labels["consumer"], sample.labels["code"])] = sample.value
    return found


def envoy_text(cluster: Cluster, what: str, *args: str) -> str:
    """The logs or the statistics of the Gateway's Envoy pods that serve (Ready): a pod the kubelet
    lost track of (ContainerStatusUnknown after a node restart) keeps its labels and a dead address."""
    pods = cluster.kubectl("get", "pods", "-n", ENVOY_NAMESPACE, "-l", ENVOY_PODS, "-o", "json").stdout
    serving = [pod for pod in json.loads(pods)["items"] if condition(pod, "Ready").get("status") == "True"]
    assert serving, f"no Ready Envoy pod of the Gateway ({ENVOY_PODS})"
    texts = []
    for pod in serving:
        if what == "logs":
            texts.append(
                cluster.kubectl(
                    "logs", "-n", ENVOY_NAMESPACE, pod["metadata"]["name"], "--all-containers", *args
                ).stdout
            )
        else:
            url = f"http://{pod['status']['podIP']}:{ENVOY_STATS_PORT}/stats/prometheus"
            texts.append(httpx.get(url, timeout=10).text)
    return "\n".join(texts)


def envoy_counter(text: str, name: str) -> float:
    """The sum over every series of Envoy's counter NAME (its exposition names counters without
    _total; the parser's family keeps that name, its samples get _total)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == name
        for sample in family.samples
    )


def test_malformed_access_is_refused_at_apply_time_naming_the_field(cluster: Cluster, namespace: str) -> None:
    good = {"uri": "s3://models/iris/model.joblib", "format": "sklearn"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"consumers": ["Alice"]}, "spec.access.consumers"),
        ({"consumers": ["alice", "bad_name"]}, "spec.access.consumers"),
        ({"consumers": ["alice.1"]}, "spec.access.consumers"),
        ({"consumers": ["a" * 64]}, "spec.access.consumers"),
        ({"consumers": []}, "spec.access.consumers"),
        ({"consumers": ["alice", "alice"]}, "spec.access.consumers"),
        ({"consumers": ["alice"], "quota": {"requests": 0}}, "spec.access.quota.requests"),
        ({"consumers": ["alice"], "quota": {"requests": 5, "unit": "Day"}}, "spec.access.quota.unit"),
        ({"quota": {"requests": 5}}, "spec.access"),
    ]
    for index, (access, field) in enumerate(cases):
        body = {
            "apiVersion": "modelplane.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": f"bad-{index}"},
            "spec": {"model": good, "access": access},
        }
        result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=False)
        assert result.returncode != 0, f"accepted: {access}"
        assert field in result.stderr, f"{field} not named in: {result.stderr}"
    assert cluster.kubectl("get", "md", "-n", namespace, "-o", "name").stdout.strip() == ""


def test_an_unknown_consumer_is_not_ready_until_its_secret_exists(
    cluster: Cluster,
    namespace: str,
    operator: Path,
    gateway_up: None,
    consumer_grant: None,
    s3: S3Server,
    iris_models: dict[str, SklearnModel],
    suffix: str,
) -> None:
    alice, later = new_consumer(f"alice-{suffix}"), new_consumer(f"later-{suffix}")
    cluster.apply(alice.secret())
    try:
        access = {"consumers": [alice.name, later.name]}
        md = s3_model_deployment("iris", iris_models["v1"], gateway=GATEWAY, access=access)
        cluster.apply([credentials_secret(s3), md], namespace)
        obj = wait_reason(cluster, namespace, "iris", {"UnknownConsumer"}, timeout=180)
        ready = condition(obj, "Ready")
        assert ready["status"] == "False"
        assert repr(later.name) in ready["message"]
        assert CONSUMERS in ready["message"]
        assert alice.key not in json.dumps(obj)
        # The platform team creates the Secret: the operator's poll of the directory notices.
        cluster.apply(later.secret())
        wait_ready(cluster, namespace, "iris", timeout=120)
    finally:
        delete_consumers(cluster, alice, later)


def test_keys_quotas_and_usage_through_the_gateway(
    cluster: Cluster,
    namespace: str,
    operator: Path,
    gateway_up: None,
    consumer_grant: None,
    s3: S3Server,
    iris_models: dict[str, SklearnModel],
    prometheus_bin_dir: Path,
    suffix: str,
    tmp_path: Path,
) -> None:
    alice, bob, dave = (new_consumer(f"{who}-{suffix}") for who in ("alice", "bob", "dave"))
    team = f"team-{suffix}"
    cluster.apply([alice.secret(), bob.secret(groups=(team,)), dave.secret()])
    try:
        _keys_quotas_and_usage(
            cluster,
            namespace,
            operator,
            s3,
            iris_models["v1"],
            prometheus_bin_dir,
            tmp_path,
            alice,
            bob,
            dave,
            team,
        )
    finally:
        delete_consumers(cluster, alice, bob, dave)


def _keys_quotas_and_usage(
    cluster: Cluster,
    namespace: str,
    operator_log: Path,
    s3: S3Server,
    iris: SklearnModel,
    prometheus_bin_dir: Path,
    tmp_path: Path,
    alice: Consumer,
    bob: Consumer,
    dave: Consumer,
    team: str,
) -> None:
    access = {"consumers": [alice.name, team], "quota": {"requests": QUOTA, "unit": "Hour"}}
    md = s3_model_deployment("iris", iris, gateway=GATEWAY, access=access)
    cluster.apply([credentials_secret(s3), md], namespace)
    obj = wait_ready(cluster, namespace, "iris")
    url = obj["status"]["url"]
    assert url.startswith("https://")
    for key in (alice.key, bob.key, dave.key):
        assert key not in json.dumps(obj)
    policy_accepted(cluster, namespace, "iris", "securitypolicy")
    policy_accepted(cluster, namespace, "iris", "backendtrafficpolicy")
    rows = iris.sample
    served: Counter[str] = Counter()  # 200s per consumer: what the runtime must have counted
    refused: Counter[int] = Counter()  # the gateway's own 401, 403 and 429 this test met
    stats_before = envoy_text(cluster, "stats")

    with httpx.Client(verify=gateway_tls(cluster, tmp_path), timeout=30) as client:
        # Envoy's very first answer on the route is already the SecurityPolicy's.
        first = wait_routed(client, url)
        assert first.status_code == 401, (first.status_code, first.text)

        refused[401] += 1
        # No key, a key nobody has, a spoofed client id alone: 401.
        assert predict(client, url, {}, rows).status_code == 401
        assert predict(client, url, {"x-api-key": "not-a-key"}, rows).status_code == 401
        assert predict(client, url, {contract.CONSUMER_HEADER: f"{alice.name}.1"}, rows).status_code == 401
        refused[401] += 3
        # A consumer this model does not allow: 403.
        forbidden = predict(client, url, dave.bearer(), rows)
        assert forbidden.status_code == 403, forbidden.text
        refused[403] += 1
        # Allowed by name (Bearer, as OpenAI clients send it) and by group (x-api-key): 200.
        answer = predict(client, url, alice.bearer(), rows)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == iris.expected()
        served[alice.name] += 1
        assert predict(client, url, {"x-api-key": bob.key}, rows).status_code == 200
        served[bob.name] += 1
        # A client id sent along with alice's key is overwritten by the gateway: billed to alice.
        spoofed = predict(client, url, {**alice.bearer(), contract.CONSUMER_HEADER: f"{dave.name}.1"}, rows)
        assert spoofed.status_code == 200
        served[alice.name] += 1

        # Quota: alice goes past hers while bob's requests at the same time all succeed.
        bob_codes: list[int] = []

        def bob_calls() -> None:
            with httpx.Client(verify=gateway_tls(cluster, tmp_path), timeout=30) as own:
                bob_codes.extend(
                    predict(own, url, {"x-api-key": bob.key}, rows).status_code for _ in range(10)
                )

        thread = threading.Thread(target=bob_calls)
        thread.start()
        limited: httpx.Response | None = None
        for _ in range(QUOTA + 5):
            response = predict(client, url, alice.bearer(), rows)
            if response.status_code == 200:
                served[alice.name] += 1
                continue
            assert response.status_code == 429, (response.status_code, response.text)
            refused[429] += 1
            limited = response
        thread.join(timeout=120)
        assert limited is not None, "alice was never limited"
        assert served[alice.name] <= QUOTA
        assert limited.headers["retry-after"] == "3600"
        assert "quota exceeded" in limited.json()["error"]
        assert bob_codes == [200] * 10
        served[bob.name] += 10

        # Revocation: the platform team removes bob's key from his Secret; refused within 30 s.
        patch = json.dumps([{"op": "remove", "path": f"/data/{bob.name}.1"}])
        cluster.kubectl("patch", "secret", "-n", CONSUMERS, bob.name, "--type=json", "-p", patch)
        revoked_at = time.monotonic()
        refused_after: float | None = None
        while time.monotonic() - revoked_at < REVOKED_WITHIN_SECONDS + 5:
            code = predict(client, url, {"x-api-key": bob.key}, rows).status_code
            if code == 401:
                refused_after = time.monotonic() - revoked_at
                refused[401] += 1
                break
            assert code in (200, 429), code  # still admitted by its key (429: past its quota)
            served[bob.name] += code == 200
            refused[429] += code == 429
            time.sleep(0.5)
        assert refused_after is not None, f"bob's revoked key still worked {REVOKED_WITHIN_SECONDS + 5} s on"
        assert refused_after <= REVOKED_WITHIN_SECONDS, refused_after
        log.info("revoked key refused %.1f s after the Secret change", refused_after)

    # Usage: the runtime counted exactly the requests that reached it, per consumer.
    (pod,) = [p for p in children(cluster, namespace, "iris", "pod") if p["status"].get("podIP")]
    pod_ip = pod["status"]["podIP"]
    wait_until(
        "the runtime's usage counters to include every answered request",
        lambda: all(runtime_usage(pod_ip).get((name, "200"), 0) >= n for name, n in served.items()),
        timeout=30,
        interval=0.5,
    )
    usage = runtime_usage(pod_ip)
    assert {name: usage.get((name, "200"), 0) for name in served} == dict(served)
    assert not any(consumer == dave.name for consumer, _ in usage)
    assert not any("." in consumer for consumer, _ in usage)

    # The gateway's own refusals, from Envoy's statistics (other tests may share the Envoy: at least).
    stats_after = envoy_text(cluster, "stats")
    for status_code, statistic in (
        (401, "envoy_http_api_key_auth_unauthorized"),
        (403, "envoy_http_rbac_denied"),
        (429, "envoy_http_local_rate_limit_rate_limited"),
    ):
        counted = envoy_counter(stats_after, statistic) - envoy_counter(stats_before, statistic)
        assert counted >= refused[status_code], (statistic, counted, refused[status_code])

    # The dashboard's usage panel returns series for these consumers.
    (query,) = [query for title, query in dashboard_queries(llm=False) if title == "Usage by consumer"]
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "model-pods",
                "static_configs": [
                    {"targets": [f"{pod_ip}:{contract.HTTP_PORT}"], "labels": {"namespace": namespace}}
                ],
            }
        ],
    }
    with PrometheusServer.start(prometheus_bin_dir, config, tmp_path / "prometheus") as prometheus:
        series = prometheus.wait_for_series(query, timeout=60)
        consumers = {s["metric"]["consumer"] for s in series}
        assert {alice.name, bob.name} <= consumers, consumers

    # No key in any log: the operator's, Envoy's (every container of every Envoy pod), the model's.
    logs = {
        "operator": operator_log.read_text(errors="replace"),
        "envoy": envoy_text(cluster, "logs"),
        "model": cluster.kubectl("logs", "-n", namespace, pod["metadata"]["name"], "--all-containers").stdout,
    }
    for where, text in logs.items():
        assert text, f"no {where} log to search"
        for key in (alice.key, bob.key, dave.key):
            assert key not in text, f"a key in the {where} log"
