"""The model cache (spec.model.cache) on the local cluster: three replicas served from one download,
counted by the S3 server itself, with no pull in any pod; then a new digest fills a new cache while the
old pods serve on, and the old cache goes once nothing mounts it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster, wait_until
from tests.support.examples import credentials_secret
from tests.support.modeldeployments import (
    assert_no_pull_of_their_own,
    children,
    condition,
    md,
    model_deployment,
    predict_v1,
    s3_model_spec,
    serving_pods,
    wait_ready,
    wait_reason,
    wait_service,
)
from tests.support.models import SklearnModel
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e

# A bucket of this test's own: the S3 server counts bytes sent per bucket, so what it counts here is
# this test's downloads and nobody else's.
BUCKET = "modelplane-cache-e2e"
NAME = "cached"


@pytest.fixture
def cache_bucket(
    s3: S3Server, iris_models: dict[str, SklearnModel]
) -> tuple[S3Server, dict[str, SklearnModel]]:
    """The iris models (v1, v2) copied into BUCKET, and the server seen through that bucket."""
    client = s3.client()
    if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=BUCKET)
    models = {}
    for version, model in iris_models.items():
        client.copy_object(
            Bucket=BUCKET, Key=model.key, CopySource={"Bucket": model.bucket, "Key": model.key}
        )
        models[version] = replace(model, bucket=BUCKET)
    return replace(s3, bucket=BUCKET), models


def cached_md(model: SklearnModel) -> dict[str, Any]:
    return model_deployment(
        NAME, {"model": {**s3_model_spec(model), "cache": {"size": "64Mi"}}, "replicas": 3}
    )


def size_of(s3: S3Server, model: SklearnModel) -> int:
    return int(s3.client().head_object(Bucket=model.bucket, Key=model.key)["ContentLength"])


def fill_jobs(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return children(cluster, namespace, NAME, "job")


def timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_replicas_share_one_download_and_a_new_digest_fills_a_new_cache(
    cluster: Cluster,
    namespace: str,
    operator: Path,
    cache_bucket: tuple[S3Server, dict[str, SklearnModel]],
) -> None:
    s3, models = cache_bucket
    v1, v2 = models["v1"], models["v2"]
    before = s3.traffic()
    cluster.apply([credentials_secret(s3), cached_md(v1)], namespace)
    obj = wait_ready(cluster, namespace, NAME, timeout=300)

    # One download of the artifact for three replicas, as the S3 server counts bytes sent.
    assert (s3.traffic() - before).sent_bytes == size_of(s3, v1)
    [cache] = obj["status"]["caches"]
    assert cache["state"] == "Ready"
    assert cache["digest"] == v1.digest
    assert cache["accessModes"] == ["ReadWriteOnce"]
    # What the fill Job's pull reported (its pod's termination message): the object's own size.
    assert cache["bytes"] == size_of(s3, v1)
    assert condition(obj, "Cached")["status"] == "True"
    assert obj["status"]["servedDigest"] == v1.digest
    assert_no_pull_of_their_own(serving_pods(cluster, namespace, NAME), cache["name"], 3)
    [job] = fill_jobs(cluster, namespace)
    assert job["metadata"]["name"] == cache["name"]  # named by digest, never generated
    assert "generateName" not in job["metadata"]
    assert job["status"]["succeeded"] == 1
    [claim] = children(cluster, namespace, NAME, "pvc")
    assert claim["metadata"]["name"] == cache["name"]
    assert claim["status"]["phase"] == "Bound"
    wait_service(cluster, namespace, NAME)
    assert predict_v1(cluster, namespace, NAME, NAME, v1.sample) == v1.expected()

    # A new digest: its cache fills while the v1 pods answer; they go only once v2's pods are Ready.
    old_claim, old_pods = (
        cache["name"],
        {p["metadata"]["name"] for p in serving_pods(cluster, namespace, NAME)},
    )
    before = s3.traffic()
    cluster.apply(cached_md(v2), namespace)
    answers: list[list[Any]] = []

    def rolled_over() -> dict[str, Any] | None:
        answers.append(predict_v1(cluster, namespace, NAME, NAME, v1.sample))  # a failure fails the test
        current = md(cluster, namespace, NAME)
        status = current.get("status") or {}
        fresh = status.get("observedGeneration") == current["metadata"]["generation"]
        done = fresh and condition(current, "Ready").get("status") == "True"
        return current if done and status.get("servedDigest") == v2.digest else None

    obj = wait_until("v2 served from its own cache", rolled_over, timeout=300, interval=0.5)
    assert answers[0] == v1.expected()
    assert all(answer in (v1.expected(), v2.expected()) for answer in answers), answers
    assert predict_v1(cluster, namespace, NAME, NAME, v2.sample) == v2.expected()
    assert (s3.traffic() - before).sent_bytes == size_of(s3, v2)
    [cache] = obj["status"]["caches"]
    assert cache["digest"] == v2.digest
    assert cache["name"] != old_claim
    assert cache["bytes"] == size_of(s3, v2)

    # The v2 pods were made only after v2's cache was filled: the Deployment was held until then.
    new_job = next(j for j in fill_jobs(cluster, namespace) if j["metadata"]["name"] == cache["name"])
    newest = max(
        children(cluster, namespace, NAME, "replicaset"),
        key=lambda rs: int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]),
    )
    assert timestamp(newest["metadata"]["creationTimestamp"]) >= timestamp(
        new_job["status"]["completionTime"]
    )

    # Once no pod mounts the old cache, its claim and Job are pruned.
    def only_the_new_cache() -> bool:
        claims = [c["metadata"]["name"] for c in children(cluster, namespace, NAME, "pvc")]
        return claims == [cache["name"]] and [
            j["metadata"]["name"] for j in fill_jobs(cluster, namespace)
        ] == [cache["name"]]

    wait_until(f"the claim and Job {old_claim} pruned", only_the_new_cache, timeout=180)
    pods = serving_pods(cluster, namespace, NAME)
    assert not old_pods & {p["metadata"]["name"] for p in pods}
    assert_no_pull_of_their_own(pods, cache["name"], 3)


def test_a_storage_class_that_cannot_share_across_nodes_is_named_in_status(
    cluster: Cluster,
    namespace: str,
    operator: Path,
    cache_bucket: tuple[S3Server, dict[str, SklearnModel]],
) -> None:
    """local-path (the local cluster's default class) offers ReadWriteOnce only: a ReadWriteMany cache
    is refused by its provisioner, and status says so in its words; nothing is pulled meanwhile."""
    s3, models = cache_bucket
    before = s3.traffic()
    body = cached_md(models["v1"])
    body["spec"]["model"]["cache"]["accessMode"] = "ReadWriteMany"
    cluster.apply([credentials_secret(s3), body], namespace)
    obj = wait_reason(cluster, namespace, NAME, {"CacheClaimFailed"}, timeout=120)
    ready, cached = condition(obj, "Ready"), condition(obj, "Cached")
    assert ready["status"] == "False"
    assert cached["reason"] == "CacheClaimFailed"
    assert "NodePath only supports ReadWriteOnce" in cached["message"], cached
    assert condition(obj, "Degraded")["status"] == "True"
    [cache] = obj["status"]["caches"]
    assert cache["state"] == "Failed"
    assert cache["accessModes"] == ["ReadWriteMany"]
    assert "bytes" not in cache  # nothing was pulled into it
    assert not children(cluster, namespace, NAME, "deployment")  # held until its cache is filled
    assert (s3.traffic() - before).sent_bytes == 0
