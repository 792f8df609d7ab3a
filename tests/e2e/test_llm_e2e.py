"""The built-in LLM engine on the local cluster: SmolLM2 (GGUF) pulled from S3 with its digest, served
over the OpenAI API through the ModelDeployment's Service."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import Cluster, wait_until
from tests.support.examples import credentials_secret
from tests.support.llm import sha256_of, smollm2_gguf, stream
from tests.support.modeldeployments import (
    condition,
    md,
    model_deployment,
    request_json,
    service_url,
    wait_ready,
    wait_service,
)
from tests.support.prometheus import PrometheusServer, chart_prometheus_config, dashboard_queries
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e

KEY = "llm/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "smollm2"


@pytest.fixture(scope="module")
def smollm2(s3: S3Server) -> tuple[str, str]:
    """(uri, digest) of SmolLM2 in the local S3 server."""
    path = smollm2_gguf()
    digest = sha256_of(path)
    assert s3.upload(KEY, path.read_bytes()) == digest
    return f"s3://{s3.bucket}/{KEY}", digest


def llm_md(name: str, uri: str, digest: str, **llm: Any) -> dict[str, Any]:
    return model_deployment(
        name,
        {
            "model": {
                "uri": uri,
                "format": "gguf",
                "digest": digest,
                "credentialsSecret": "s3-credentials",
                "name": NAME,
            },
            "runtime": {"llm": {"contextLength": 1024, "maxSequences": 4, **llm}},
        },
    )


def token_counters(base: str) -> tuple[float, float]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model_name") == NAME:
                values[sample.name] = sample.value
    return values.get("vllm:prompt_tokens_total", 0.0), values.get("vllm:generation_tokens_total", 0.0)


def test_smollm2_serves_the_openai_api_through_its_service(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server, smollm2: tuple[str, str]
) -> None:
    cluster.apply([credentials_secret(s3), llm_md("chat", *smollm2)], namespace)
    wait_ready(cluster, namespace, "chat", timeout=300)
    wait_service(cluster, namespace, "chat")  # a new Service: its rules reach kube-proxy a moment later
    base = service_url(cluster, namespace, "chat")
    models = request_json(f"{base}/v1/models")
    assert [model["id"] for model in models["data"]] == [NAME]
    prompt_before, generated_before = token_counters(base)
    usages = []

    answer = request_json(
        f"{base}/v1/chat/completions",
        {
            "model": NAME,
            "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
            "temperature": 0,
            "max_tokens": 16,
        },
    )
    usages.append(answer["usage"])
    assert "paris" in answer["choices"][0]["message"]["content"].lower(), answer

    events = stream(
        f"{base}/v1/chat/completions",
        {
            "model": NAME,
            "messages": [{"role": "user", "content": "Name three colours."}],
            "temperature": 0,
            "max_tokens": 24,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert events[-1] == "[DONE]"
    content_chunks = [e for e in events[:-1] if e["choices"] and e["choices"][0]["delta"].get("content")]
    assert len(content_chunks) > 3
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] > 3
    usages.append(usage_chunk["usage"])

    completion = request_json(
        f"{base}/v1/completions",
        {"model": NAME, "prompt": "The capital of Germany is", "max_tokens": 5, "temperature": 0},
    )
    usages.append(completion["usage"])

    # Every token is counted before its response is written: the counters agree at once.
    prompt_after, generated_after = token_counters(base)
    assert prompt_after - prompt_before == sum(u["prompt_tokens"] for u in usages)
    assert generated_after - generated_before == sum(u["completion_tokens"] for u in usages)


def test_a_context_that_does_not_fit_the_memory_limit_is_not_ready_with_the_engines_reason(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server, smollm2: tuple[str, str]
) -> None:
    body = llm_md("too-big", *smollm2, contextLength=8192, maxSequences=64)
    body["spec"]["runtime"]["resources"] = {"limits": {"memory": "512Mi"}, "requests": {"memory": "256Mi"}}
    cluster.apply([credentials_secret(s3), body], namespace)

    def not_ready_with_reason() -> dict[str, Any] | None:
        ready = condition(md(cluster, namespace, "too-big"), "Ready")
        return ready if "does not fit the memory limit" in ready.get("message", "") else None

    ready = wait_until("the memory reason in status", not_ready_with_reason, timeout=240)
    assert ready["status"] == "False"
    assert "ModelLoadFailed" in ready["message"]
    assert "512 MiB" in ready["message"]


# Counting on from ten, SmolLM2 goes on to the token limit at temperature 0 (it did in every run).
COUNTING = "".join(f"{number}\n" for number in range(1, 11))
LONG_TOKENS = 600
# The CPU limit puts a ceiling on its speed: a quarter core makes at most about 40 tokens/s of the
# 158 a whole quiet core makes, so LONG_TOKENS take at least 15 s wherever this runs.
LONG_CPU = "250m"


def test_a_stream_longer_than_15s_arrives_whole_and_the_dashboards_llm_panels_have_data(
    cluster: Cluster,
    namespace: str,
    operator: Path,
    s3: S3Server,
    smollm2: tuple[str, str],
    prometheus_bin_dir: Path,
    tmp_path: Path,
) -> None:
    """A completion streamed for more than 15 s (Envoy's default route timeout) arrives whole through
    the Service: every token, the usage chunk and [DONE]. Prometheus, with the chart's own scrape job
    and rules, scrapes the pod meanwhile: every LLM panel of the dashboard returns series, and the
    rules (the waiting-queue alert among them) evaluate."""
    body = llm_md("long", *smollm2, contextLength=1024, maxSequences=2)
    body["spec"]["runtime"] |= {
        "requestTimeoutSeconds": 900,
        "resources": {"limits": {"cpu": LONG_CPU, "memory": "1Gi"}, "requests": {"cpu": LONG_CPU}},
    }
    cluster.apply([credentials_secret(s3), body], namespace)
    wait_ready(cluster, namespace, "long", timeout=300)
    wait_service(cluster, namespace, "long")
    base = service_url(cluster, namespace, "long")
    with PrometheusServer.start(
        prometheus_bin_dir, chart_prometheus_config(cluster, namespace), tmp_path / "prometheus"
    ) as prometheus:
        pod = f'namespace="{namespace}", pod=~"long-.*"'
        prometheus.wait_for_series(f"up{{{pod}}} == 1")
        # rate() needs a counter that moved between two scrapes: one short answer scraped first.
        short = {"model": NAME, "prompt": "The capital of Germany is", "max_tokens": 4, "temperature": 0}
        request_json(f"{base}/v1/completions", short)
        prometheus.wait_for_series(
            f'vllm:e2e_request_latency_seconds_count{{{pod}, model_name="{NAME}"}} >= 1'
        )

        started = time.monotonic()
        events = stream(
            f"{base}/v1/completions",
            {
                "model": NAME,
                "prompt": COUNTING,
                "max_tokens": LONG_TOKENS,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
        seconds = time.monotonic() - started
        assert seconds > 15, f"the stream took {seconds:.1f} s: this test needs one longer than 15 s"
        assert events[-1] == "[DONE]"
        assert events[-2]["usage"]["completion_tokens"] == LONG_TOKENS
        finish = [e["choices"][0]["finish_reason"] for e in events[:-2] if e["choices"][0]["finish_reason"]]
        assert finish == ["length"]
        text = "".join(e["choices"][0]["text"] for e in events[:-2])
        assert text.startswith("11\n12\n"), text[:40]

        for title, query in dashboard_queries(llm=True):
            assert prometheus.wait_for_series(query, timeout=60), title
        rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
        assert "ModelplaneLLMQueueGrowing" in {rule["name"] for rule in rules}
        assert all(rule["health"] == "ok" for rule in rules), [
            (rule["name"], rule["health"], rule.get("lastError")) for rule in rules
        ]


def test_a_completion_through_the_service_equals_llama_cpp_python_on_the_same_file(
    cluster: Cluster, namespace: str, operator: Path, s3: S3Server, smollm2: tuple[str, str]
) -> None:
    """/v1/completions at temperature 0, one request in flight, through the Service: the same text
    and logprob tokens as llama-cpp-python's own Llama class (the reference, used only here) on the
    same file, with the deployment's context, batch and thread settings."""
    from llama_cpp import Llama

    context, prompt, tokens = 1024, "The three primary colours are", 24
    cluster.apply(
        [credentials_secret(s3), llm_md("same", *smollm2, contextLength=context, maxSequences=1)], namespace
    )
    reference = Llama(
        str(smollm2_gguf()),
        n_ctx=context,
        n_batch=512,
        n_ubatch=512,
        n_threads=1,
        n_threads_batch=1,
        logits_all=True,
        verbose=False,
    )
    answer = reference.create_completion(prompt, max_tokens=tokens, temperature=0, logprobs=1)
    assert isinstance(answer, dict)  # not a stream
    expected: dict[str, Any] = dict(answer)
    del reference
    wait_ready(cluster, namespace, "same", timeout=300)
    wait_service(cluster, namespace, "same")
    ours = request_json(
        f"{service_url(cluster, namespace, 'same')}/v1/completions",
        {"model": NAME, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "logprobs": 1},
    )
    assert ours["choices"][0]["text"] == expected["choices"][0]["text"]
    assert ours["choices"][0]["logprobs"]["tokens"] == expected["choices"][0]["logprobs"]["tokens"]
    assert ours["usage"] == expected["usage"]
    # The values agree only roughly: in the first run the pod's differed from the reference's by up to
    # 0.19 (11 of 24 by more than 0.05) with the same tokens; the cause (our context's defaults, such
    # as llama.cpp's automatic flash attention, against Llama's) is not yet pinned down.
    expected_logprobs = expected["choices"][0]["logprobs"]["token_logprobs"]
    assert ours["choices"][0]["logprobs"]["token_logprobs"] == pytest.approx(expected_logprobs, abs=0.3)
