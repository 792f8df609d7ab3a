"""The optimize step's cache in the real S3 server of `make s3`: kept by digest beside the artifact,
reused by the next pod, and outside the prefix a model directory is pulled (and digested) from."""

from __future__ import annotations

import io

import joblib
import modelplane_contract as contract
import pytest
from modelplane_runtime.optimize.cache import S3Cache, cache_for
from modelplane_runtime.optimize.step import OptimizeSettings, optimize
from modelplane_runtime.storage.base import Settings
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests.runtime.models import iris
from tests.runtime.pull.conftest import PullRunner, tree_digest
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e


def test_the_second_pod_takes_the_first_pods_result_and_the_prefix_still_verifies(
    s3: S3Server, s3_prefix: str, run_pull: PullRunner
) -> None:
    features, labels = iris()
    buffer = io.BytesIO()
    joblib.dump(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features, labels), buffer
    )
    files = {"model.joblib": buffer.getvalue()}
    s3.client().put_object(Bucket=s3.bucket, Key=f"{s3_prefix}/model.joblib", Body=files["model.joblib"])
    uri, digest = f"s3://{s3.bucket}/{s3_prefix}/", tree_digest(files)
    settings = OptimizeSettings(onnx=True)
    outcomes = []
    for _ in range(2):  # two pods, one after the other
        pulled = run_pull(uri, "--digest", digest)
        assert pulled.code == contract.EXIT_OK, pulled.stderr
        cache = cache_for(uri, Settings())
        assert isinstance(cache, S3Cache)
        outcomes.append(optimize(pulled.dest, "sklearn", settings, cache, digest, allow_pickle=True))
        for name in ("model.onnx", contract.OPTIMIZED_RECORD_FILE):
            (pulled.dest / contract.OPTIMIZED_DIR / name).unlink(missing_ok=True)
    first, second = outcomes
    assert first.reason == second.reason == contract.REASON_OPTIMIZED, first.message
    assert first.cache.startswith(f"stored in s3://{s3.bucket}/{s3_prefix}.modelplane-optimized/")
    assert second.cache.startswith(f"found in s3://{s3.bucket}/{s3_prefix}.modelplane-optimized/")
    assert {**first.status(), "cache": ""} == {**second.status(), "cache": ""}
    # The cache lies beside the prefix, not in it: the model directory's manifest digest still holds.
    again = run_pull(uri, "--digest", digest)
    assert again.code == contract.EXIT_OK, again.stderr
