"""The built-in LLM engine on the local cluster: SmolLM2 (GGUF) pulled from S3 with its digest, served
over the OpenAI API through the ModelDeployment's Service."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import Cluster, wait_until
from tests.support.examples import credentials_secret
from tests.support.llm import sha256_of, smollm2_gguf
from tests.support.modeldeployments import condition, md, request_json, service_url, wait_ready
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
    return {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "uri": uri,
                "format": "gguf",
                "digest": digest,
                "credentialsSecret": "s3-credentials",
                "name": NAME,
            },
            "runtime": {"llm": {"contextLength": 1024, "maxSequences": 4, **llm}},
        },
    }


def stream(url: str, body: Any) -> list[Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    events = []
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for raw in response:
            line = raw.decode().strip()
            if line:
                assert line.startswith("data: "), line
                data = line.removeprefix("data: ")
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


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
