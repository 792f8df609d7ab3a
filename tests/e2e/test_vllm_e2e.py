"""The vLLM engine on the local cluster: a tiny random llama (a transformers directory written in the
test) uploaded to S3, pulled and digest-checked by our pull, served by vLLM's OpenAI server from the
runtime-vllm image, asked through the ModelDeployment's Service, and compared token for token with
transformers' own greedy generate on the same files (float32), run in the same image.

The serving test is `heavy` (make test-heavy): see docs/formats.md for the image's size and build time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from modelplane import spec as specs
from modelplane.render.autoscaling import prometheus_query
from modelplane.render.vllm import HEALTH_PATH
from modelplane_runtime.storage.digest import directory_digest

from tests.runtime import llm_contract
from tests.runtime.llm_models import write_tiny_transformers_llama
from tests.support.cluster import Cluster
from tests.support.examples import credentials_secret
from tests.support.llm import stream
from tests.support.modeldeployments import (
    model_deployment,
    request_json,
    service_url,
    wait_ready,
    wait_service,
)
from tests.support.prometheus import PrometheusServer, chart_prometheus_config
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e

NAME = "tiny"
PREFIX = "llm/tiny-llama/"
TOKENS = 16
CONTEXT = 256
PROMPT = "The quick brown fox"
MESSAGES = [{"role": "user", "content": "Paris is the capital of"}]
# transformers' greedy generate on the pulled model, in the model-server container (the image has
# torch and transformers; the test host needs neither): the prompt token ids of both requests as
# transformers' tokenizer makes them, and the TOKENS it generates after each set of ids it is given.
REFERENCE = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
request = json.loads(sys.argv[1])
tokenizer = AutoTokenizer.from_pretrained("/mnt/models")
model = AutoModelForCausalLM.from_pretrained("/mnt/models", dtype=torch.float32)
chat = tokenizer.apply_chat_template(request["messages"], add_generation_prompt=True, tokenize=False)
generated = []
for ids in request["prompts"]:
    inputs = torch.tensor([ids])
    output = model.generate(
        inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=request["tokens"], do_sample=False
    )
    generated.append(output[0, len(ids):].tolist())
print(json.dumps({
    "completion_prompt": tokenizer(request["prompt"]).input_ids,
    "chat_prompt": tokenizer(chat, add_special_tokens=False).input_ids,
    "generated": generated,
}))
"""


@pytest.fixture(scope="module")
def tiny_llama(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(uri, digest) of the tiny llama's directory in the local S3 server."""
    directory = write_tiny_transformers_llama(tmp_path_factory.mktemp("tiny-llama") / "model")
    for path in sorted(directory.iterdir()):
        s3.upload(PREFIX + path.name, path.read_bytes())
    return f"s3://{s3.bucket}/{PREFIX}", directory_digest(directory)


def vllm_md(name: str, uri: str, digest: str) -> dict[str, Any]:
    return model_deployment(
        name,
        {
            "model": {
                "uri": uri,
                "format": "huggingface",
                "digest": digest,
                "credentialsSecret": "s3-credentials",
                "name": NAME,
            },
            "runtime": {
                "llm": {"engine": "vllm", "contextLength": CONTEXT, "maxSequences": 4},
                # transformers computes in float32; vLLM would run an F32 checkpoint as bf16 on CPU.
                "args": ["--dtype", "float32"],
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "6Gi"}},
            },
        },
    )


def server_pod(cluster: Cluster, namespace: str, name: str) -> str:
    pods = cluster.kubectl(
        "get", "pods", "-n", namespace, "-l", f"modelplane.io/name={name}", "-o", "json"
    ).stdout
    [pod] = [item["metadata"]["name"] for item in json.loads(pods)["items"]]
    return str(pod)


@pytest.mark.heavy
def test_vllm_serves_the_tiny_llama_through_its_service_as_transformers_generates_it(
    cluster: Cluster,
    namespace: str,
    operator: Path,
    s3: S3Server,
    tiny_llama: tuple[str, str],
    prometheus_bin_dir: Path,
    tmp_path: Path,
) -> None:
    uri, digest = tiny_llama
    cluster.apply([credentials_secret(s3), vllm_md("vllm", uri, digest)], namespace)
    # Ready only after the startup probe's generation: vLLM loads and compiles nothing, but imports a lot.
    wait_ready(cluster, namespace, "vllm", timeout=600)
    wait_service(cluster, namespace, "vllm", path=HEALTH_PATH)  # vLLM has no /v2/health/ready
    base = service_url(cluster, namespace, "vllm")
    assert [model["id"] for model in request_json(f"{base}/v1/models")["data"]] == [NAME]

    completion = request_json(
        f"{base}/v1/completions",
        {"model": NAME, "prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0, "return_token_ids": True},
    )
    [choice] = completion["choices"]
    assert completion["usage"]["completion_tokens"] == TOKENS
    assert len(choice["token_ids"]) == TOKENS

    events = stream(
        f"{base}/v1/chat/completions",
        {
            "model": NAME,
            "messages": MESSAGES,
            "max_tokens": TOKENS,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "return_token_ids": True,
        },
        read_timeout=120,
    )
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == TOKENS
    chunks = [event for event in events[:-2] if event["choices"]]
    assert len([c for c in chunks if c["choices"][0]["delta"].get("content")]) > 3
    streamed_ids = [token for c in chunks for token in c["choices"][0].get("token_ids") or []]
    assert len(streamed_ids) == TOKENS
    chat_prompt_ids = next(c["prompt_token_ids"] for c in chunks if c.get("prompt_token_ids"))

    pod = server_pod(cluster, namespace, "vllm")
    request = {
        "prompt": PROMPT,
        "messages": MESSAGES,
        "prompts": [choice["prompt_token_ids"], chat_prompt_ids],
        "tokens": TOKENS,
    }
    reference = json.loads(
        cluster.kubectl(
            "exec", "-n", namespace, pod, "-c", "model-server", "--",
            "python3", "-c", REFERENCE, json.dumps(request),
        ).stdout.strip().splitlines()[-1]
    )  # fmt: skip
    # The same prompt ids from transformers' tokenizer and its chat template (the ChatML one written)...
    assert reference["completion_prompt"] == choice["prompt_token_ids"]
    assert reference["chat_prompt"] == chat_prompt_ids
    # ...and the same greedy tokens after them.
    assert reference["generated"] == [choice["token_ids"], streamed_ids]

    # The OpenAI subset the built-in engine serves, checked the same way (tests/runtime/test_llm.py).
    with httpx.Client(base_url=base, timeout=120) as client:
        llm_contract.check_engine(client, NAME, CONTEXT)

    # vLLM's own /metrics, scraped with the chart's Prometheus job: the KEDA queries of the LLM metrics
    # (waitingRequests, kvCacheUsage) return the model's series unchanged.
    with PrometheusServer.start(
        prometheus_bin_dir, chart_prometheus_config(cluster, namespace), tmp_path / "prometheus"
    ) as prometheus:
        prometheus.wait_for_series(f'up{{namespace="{namespace}", pod=~"vllm-.*"}} == 1')
        md = specs.parse(
            {**vllm_md("vllm", uri, digest), "metadata": {"name": "vllm", "namespace": namespace}}
        )
        for metric in specs.LLM_AUTOSCALING_METRICS:
            assert prometheus.wait_for_series(prometheus_query(md, metric)), metric
        generated = prometheus.wait_for_series(
            f'vllm:generation_tokens_total{{namespace="{namespace}", model_name="{NAME}"}} >= {2 * TOKENS}'
        )
        assert generated


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"model": {"format": "gguf"}}, "spec.runtime.llm.engine: builtin serves format gguf"),
        ({"model": {"format": "onnx"}}, "spec.runtime.llm applies only to a language model"),
        ({"runtime": {"workers": 2}}, "spec.runtime.workers must be 1 for a language model"),
        ({"runtime": {"protocols": ["v2"]}}, "spec.runtime.protocols: a language model"),
    ],
)
def test_bad_vllm_combinations_are_rejected_naming_the_field(
    cluster: Cluster, namespace: str, change: dict[str, Any], named: str
) -> None:
    body = vllm_md("bad", "s3://modelplane/tiny-llama/", "sha256:" + "0" * 64)
    for part, fields in change.items():
        body["spec"][part].update(fields)
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=False)
    assert result.returncode != 0
    assert named in result.stderr, result.stderr
