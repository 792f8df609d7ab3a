"""spec.parse: defaults, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest
from modelplane import spec


def body(**spec_fields: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 2},
        "spec": {"model": {"uri": "s3://b/k", "format": "sklearn"}, **spec_fields},
    }


def test_defaults() -> None:
    md = spec.parse(body())
    assert md.replicas == 1
    assert md.strategy == "RollingUpdate"
    assert md.runtime.protocols == ("v1", "v2", "grpc")
    assert md.served_name == "m"
    assert md.model.allow_pickle is False
    assert md.autoscaling is None


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"model": {"uri": "ftp://x/y", "format": "sklearn"}}, "spec.model.uri"),
        ({"model": {"uri": "s3://b/k", "format": "keras"}}, "spec.model.format"),
        ({"model": {"uri": "s3://b/k", "format": "onnx", "signature": "serve"}}, "spec.model.signature"),
        ({"model": {"uri": "s3://b/k", "format": "tensorflow", "signature": "a b"}}, "spec.model.signature"),
        ({"model": {"uri": "s3://b/k", "format": "sklearn", "digest": "md5:00"}}, "spec.model.digest"),
        ({"model": {"uri": "pvc://claim-only", "format": "onnx"}}, "spec.model.uri"),
        (
            {"model": {"uri": "pvc://claim/m", "format": "onnx", "digest": "sha256:" + "0" * 64}},
            "spec.model.digest",
        ),
        ({"replicas": -1}, "spec.replicas"),
        ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "spec.autoscaling.minReplicas"),
        (
            {"autoscaling": {"minReplicas": 0, "maxReplicas": 2, "metric": "cpu"}},
            "spec.autoscaling.minReplicas",
        ),
        ({"autoscaling": {"maxReplicas": 2, "metric": "gpu"}}, "spec.autoscaling.metric"),
        (
            {"autoscaling": {"maxReplicas": 2, "scaleDownDelaySeconds": -1}},
            "spec.autoscaling.scaleDownDelaySeconds",
        ),
        (
            {"autoscaling": {"maxReplicas": 2, "scaleDownDelaySeconds": 3601}},
            "spec.autoscaling.scaleDownDelaySeconds",
        ),
        (
            {"autoscaling": {"maxReplicas": 2, "scaleDownDelaySeconds": "5m"}},
            "spec.autoscaling.scaleDownDelaySeconds",
        ),
        (
            {"rollout": {"canary": {"model": {"uri": "s3://b/k2", "format": "sklearn"}}}},
            "spec.rollout.canary",
        ),
        (
            {
                "rollout": {
                    "strategy": "Canary",
                    "canary": {"trafficPercent": 101, "model": {"uri": "s3://b/c", "format": "onnx"}},
                }
            },
            "spec.rollout.canary.trafficPercent",
        ),
        ({"runtime": {"gpus": -1}}, "spec.runtime.gpus"),
        ({"autoscaling": {"maxReplicas": 2, "metric": "waitingRequests"}}, "spec.autoscaling.metric"),
        ({"autoscaling": {"maxReplicas": 2, "metric": "kvCacheUsage"}}, "spec.autoscaling.metric"),
        ({"runtime": {"protocols": ["v3"]}}, "spec.runtime.protocols"),
    ],
)
def test_errors_name_the_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(spec.SpecError, match=named.replace(".", r"\.")):
        spec.parse(body(**fields))


def test_scale_down_delay_defaults_to_the_hpa_and_keda_default_and_can_be_shortened() -> None:
    default = spec.parse(body(autoscaling={"maxReplicas": 3, "metric": "rps"})).autoscaling
    assert default is not None
    assert default.scale_down_delay_seconds == 300
    short = spec.parse(body(autoscaling={"maxReplicas": 3, "scaleDownDelaySeconds": 0})).autoscaling
    assert short is not None
    assert short.scale_down_delay_seconds == 0


def gguf_body(**autoscaling: Any) -> dict[str, Any]:
    return body(
        model={"uri": "s3://b/m.gguf", "format": "gguf"}, autoscaling={"maxReplicas": 3, **autoscaling}
    )


@pytest.mark.parametrize("metric", ["waitingRequests", "kvCacheUsage"])
def test_a_language_model_scales_on_its_engine_metrics_with_keda(metric: str) -> None:
    autoscaling = spec.parse(gguf_body(metric=metric, target=60)).autoscaling
    assert autoscaling is not None
    assert (autoscaling.metric, autoscaling.target, autoscaling.uses_keda) == (metric, 60, True)


@pytest.mark.parametrize("metric", ["concurrency", "rps", "waitingRequests"])
def test_min_replicas_zero_without_a_gateway_is_refused_saying_why(metric: str) -> None:
    with pytest.raises(
        spec.SpecError, match=r"spec\.autoscaling\.minReplicas 0 \(scale to zero\) needs spec\.gateway"
    ):
        spec.parse(gguf_body(metric=metric, minReplicas=0))


def test_kv_cache_usage_target_is_a_percentage() -> None:
    with pytest.raises(spec.SpecError, match=r"spec\.autoscaling\.target must be between 1 and 100"):
        spec.parse(gguf_body(metric="kvCacheUsage", target=101))
    autoscaling = spec.parse(gguf_body(metric="waitingRequests", target=101)).autoscaling
    assert autoscaling is not None
    assert autoscaling.target == 101


def test_canary_and_pvc() -> None:
    md = spec.parse(
        body(
            model={"uri": "pvc://claim/dir/model", "format": "onnx"},
            rollout={
                "strategy": "Canary",
                "canary": {"trafficPercent": 20, "model": {"uri": "s3://b/c", "format": "onnx"}},
            },
        )
    )
    assert md.model.pvc == ("claim", "dir/model")
    assert md.canary is not None
    assert md.canary.traffic_percent == 20


GGUF = {"uri": "s3://b/model.gguf", "format": "gguf"}
HF = {"uri": "s3://b/tiny-llama/", "format": "huggingface"}
VLLM = {"llm": {"engine": "vllm"}}


def test_a_gguf_model_serves_openai_from_one_engine_process_by_default() -> None:
    md = spec.parse(body(model=GGUF))
    assert md.runtime.protocols == ("openai",)
    assert md.runtime.llm == spec.LLM(engine="builtin", context_length=2048, max_sequences=4, threads=1)
    assert spec.parse(body()).runtime.llm is None


def test_a_huggingface_model_is_a_language_model_on_vllm_and_a_pipeline_otherwise() -> None:
    on_vllm = spec.parse(
        body(
            model=HF,
            runtime={"llm": {"engine": "vllm", "contextLength": 256}},
            autoscaling={"maxReplicas": 2, "metric": "waitingRequests"},
        )
    )
    assert on_vllm.runtime.protocols == ("openai",)
    assert on_vllm.runtime.llm == spec.LLM(engine="vllm", context_length=256, max_sequences=4, threads=1)
    assert on_vllm.autoscaling is not None
    assert on_vllm.autoscaling.uses_keda
    pipeline = spec.parse(body(model=HF))
    assert pipeline.runtime.protocols == ("v1", "v2", "grpc")
    assert pipeline.runtime.llm is None


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"model": GGUF, "runtime": {"protocols": ["v2"]}}, "spec.runtime.protocols"),
        ({"runtime": {"protocols": ["openai"]}}, "spec.runtime.protocols"),
        ({"runtime": {"llm": {"contextLength": 512}}}, "spec.runtime.llm"),
        ({"model": GGUF, "runtime": {"workers": 2}}, "spec.runtime.workers"),
        ({"model": GGUF, "runtime": {"llm": {"engine": "vllm"}}}, "spec.runtime.llm.engine: vllm serves"),
        ({"model": HF, "runtime": {"llm": {}}}, "spec.runtime.llm.engine: builtin serves format gguf"),
        ({"model": HF, "runtime": {"llm": {"engine": "tgi"}}}, "spec.runtime.llm.engine"),
        ({"runtime": {"llm": {"engine": "vllm"}}}, "spec.runtime.llm applies only to a language model"),
        ({"model": HF, "runtime": {"protocols": ["openai"]}}, "spec.runtime.protocols"),
        ({"model": HF, "runtime": {**VLLM, "protocols": ["v2"]}}, "spec.runtime.protocols"),
        ({"model": HF, "runtime": {**VLLM, "workers": 2}}, "spec.runtime.workers"),
        (
            {"model": HF, "autoscaling": {"maxReplicas": 2, "metric": "waitingRequests"}},
            "spec.autoscaling.metric",
        ),
        (
            {
                "model": HF,
                "runtime": VLLM,
                "rollout": {"strategy": "Canary", "canary": {"model": {"uri": "s3://b/k", "format": "onnx"}}},
            },
            "spec.rollout.canary.model.format",
        ),
        (
            {
                "model": HF,
                "runtime": VLLM,
                "gateway": {"name": "modelplane"},
                "rollout": {"shadow": {"model": {"uri": "s3://b/k", "format": "onnx"}}},
            },
            "spec.rollout.shadow.model.format",
        ),
        ({"model": GGUF, "runtime": {"llm": {"contextLength": 8}}}, "spec.runtime.llm.contextLength"),
        (
            {
                "model": GGUF,
                "rollout": {"strategy": "Canary", "canary": {"model": {"uri": "s3://b/k", "format": "onnx"}}},
            },
            "spec.rollout.canary.model",
        ),
    ],
)
def test_language_model_errors_name_the_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(spec.SpecError, match=named.replace(".", r"\.")):
        spec.parse(body(**fields))


def _optimize(fmt: str = "sklearn", uri: str = "s3://b/k", **optimize: Any) -> dict[str, Any]:
    return {"model": {"uri": uri, "format": fmt, "optimize": optimize}}


def test_optimize_defaults_the_gate_from_the_contract() -> None:
    import modelplane_contract as contract

    model = spec.parse(body(**_optimize(onnx=True, quantize="int8"))).model
    assert model.optimize == spec.Optimize(onnx=True, quantize="int8")
    assert model.optimize.gate.min_agreement == contract.GATE_MIN_AGREEMENT
    assert spec.parse(body()).model.optimize is None
    onnx_int8 = spec.parse(body(**_optimize("onnx", quantize="int8", gate={"maxAbsError": 0.5}))).model
    assert onnx_int8.optimize is not None
    assert onnx_int8.optimize.gate.max_abs_error == 0.5
    for converted in ("xgboost", "lightgbm", "tensorflow"):
        assert spec.parse(body(**_optimize(converted, onnx=True))).model.optimize == spec.Optimize(onnx=True)
    keras_int8 = spec.parse(body(**_optimize("tensorflow", onnx=True, quantize="int8"))).model.optimize
    assert keras_int8 == spec.Optimize(onnx=True, quantize="int8")


@pytest.mark.parametrize(
    ("fields", "named", "says"),
    [
        (_optimize(), "spec.model.optimize", "asks for nothing"),
        (_optimize("pytorch", onnx=True), "spec.model.optimize", "format pytorch has no ONNX form"),
        (_optimize(quantize="int8"), "spec.model.optimize.quantize", "set spec.model.optimize.onnx: true"),
        (_optimize("onnx", onnx=True), "spec.model.optimize.onnx", "ONNX already"),
        (_optimize(quantize="int4", onnx=True), "spec.model.optimize.quantize", "not one of int8"),
        (_optimize(uri="pvc://claim/iris", onnx=True), "spec.model.optimize", "pvc://"),
        (
            _optimize(onnx=True, gate={"minAgreement": 1.5}),
            "spec.model.optimize.gate.minAgreement",
            "between",
        ),
        (_optimize(onnx=True, gate={"maxAbsError": -1}), "spec.model.optimize.gate.maxAbsError", "0 or more"),
    ],
)
def test_optimize_that_cannot_apply_is_refused_naming_the_field(
    fields: dict[str, Any], named: str, says: str
) -> None:
    with pytest.raises(spec.SpecError, match=named.replace(".", r"\.")) as raised:
        spec.parse(body(**fields))
    assert says in str(raised.value)
