"""The pure pieces of `make bench-llm`: timings, percentiles, the summary of a level, the ratios."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from tests.bench import llm_stats
from tests.bench.llm import CONCURRENCIES, WORKLOADS, requests_at, sse_lines
from tests.bench.llm_stats import LLAMA_CPP_SERVER, OURS, VLLM_DEPLOYMENT, VLLM_DIRECT, RequestTiming
from tests.bench.llm_vllm import SHORT_WORKLOADS, direct_pod, first_index, turns

GOLDEN = Path(__file__).resolve().parents[1] / "operator" / "golden"


def test_ttft_and_inter_token_gaps_come_from_the_chunks_arrival() -> None:
    timing = RequestTiming(started=10.0, finished=10.6, token_times=[10.2, 10.3, 10.5], completion_tokens=3)
    assert timing.ttft == pytest.approx(0.2)
    assert timing.inter_token == pytest.approx([0.1, 0.2])
    assert RequestTiming(started=1.0).ttft is None


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 17)]
    assert llm_stats.percentile(values, 0.5) == 8
    assert llm_stats.percentile(values, 0.99) == 16
    assert llm_stats.percentile([3.0], 0.99) == 3
    assert math.isnan(llm_stats.percentile([], 0.5))


def test_a_level_counts_tokens_over_its_wall_time_and_leaves_failures_out_of_latency() -> None:
    timings = [
        RequestTiming(started=0.0, finished=2.0, token_times=[0.5, 1.0, 1.5, 2.0], completion_tokens=4),
        RequestTiming(started=0.0, finished=4.0, token_times=[1.0, 2.0, 3.0, 4.0], completion_tokens=4),
        RequestTiming(started=1.0, finished=1.1, error="503: queue full"),
    ]
    result = llm_stats.summarize("w", OURS, 2, timings)
    assert (result.requests, result.errors, result.tokens) == (3, 1, 8)
    assert result.wall_s == 4.0
    assert result.tokens_per_second == 2.0
    assert (result.ttft_p50_s, result.ttft_p99_s) == (0.5, 1.0)
    assert (result.itl_p50_s, result.itl_p99_s) == (0.5, 1.0)
    assert (result.e2e_p50_s, result.e2e_p99_s) == (2.0, 4.0)


def test_ratios_judge_the_targets_and_a_whole_answer_has_no_ttft_ratio() -> None:
    def level(server: str, concurrency: int, tokens: int, ttft: float | None) -> llm_stats.LevelResult:
        times = [ttft, ttft + 1] if ttft is not None else []
        timing = RequestTiming(started=0.0, finished=10.0, token_times=times, completion_tokens=tokens)
        return llm_stats.summarize("w", server, concurrency, [timing])

    results = [
        level(OURS, 1, 95, 0.1),
        level(LLAMA_CPP_SERVER, 1, 100, 0.1),
        level(OURS, 16, 310, 1.0),
        level(LLAMA_CPP_SERVER, 16, 100, 5.0),
    ]
    ratios = llm_stats.ratios(results, "w")
    assert [(round(r.value, 2), r.met) for r in ratios] == [(0.95, True), (3.1, True), (0.2, True)]
    slower = [level(OURS, 16, 200, None), level(LLAMA_CPP_SERVER, 16, 100, None)]
    (only,) = llm_stats.ratios(slower, "w")
    assert (only.value, only.met) == (2.0, False)


def test_every_request_of_a_level_has_a_prompt_of_its_own() -> None:
    for workload in WORKLOADS:
        prompts = {str(workload.messages(index)) for index in range(40)}
        assert len(prompts) == 40, workload.label
    assert [requests_at(c, 1.0) for c in (1, 4, 16)] == [4, 4, 16]
    markdown = llm_stats.markdown_table([llm_stats.summarize("w", OURS, 1, [RequestTiming(0.0, 1.0)])])
    assert markdown.splitlines()[-1] == "| w | modelplane | 1 | 1 | 0.0 | - | - | - | - | 1,000 | 1,000 | 0 |"


def test_rounds_count_tokens_over_their_summed_wall_times_not_the_gaps_between() -> None:
    first = [RequestTiming(started=0.0, finished=2.0, token_times=[1.0, 2.0], completion_tokens=2)]
    second = [RequestTiming(started=100.0, finished=102.0, token_times=[100.5, 102.0], completion_tokens=2)]
    result = llm_stats.summarize_rounds("w", VLLM_DIRECT, 1, [first, second])
    assert (result.requests, result.tokens, result.wall_s) == (2, 4, 4.0)
    assert result.tokens_per_second == 1.0
    assert (result.ttft_p50_s, result.ttft_p99_s) == (0.5, 1.0)
    assert llm_stats.summarize("w", VLLM_DIRECT, 1, first) == llm_stats.summarize_rounds(
        "w", VLLM_DIRECT, 1, [first]
    )


def test_vllm_ratios_judge_within_five_percent_of_the_direct_pod() -> None:
    def level(server: str, concurrency: int, tokens: int, ttft: float | None) -> llm_stats.LevelResult:
        times = [ttft, ttft + 1] if ttft is not None else []
        timing = RequestTiming(started=0.0, finished=10.0, token_times=times, completion_tokens=tokens)
        return llm_stats.summarize("w", server, concurrency, [timing])

    results = [
        level(VLLM_DEPLOYMENT, 1, 96, 1.0),
        level(VLLM_DIRECT, 1, 100, 1.0),
        level(VLLM_DEPLOYMENT, 16, 90, 2.0),
        level(VLLM_DIRECT, 16, 100, 1.0),
    ]
    ratios = llm_stats.vllm_ratios(results, "w")
    assert [(round(r.value, 2), r.target, r.met) for r in ratios] == [
        (0.96, ">= 0.95x", True),
        (1.0, "<= 1.05x", True),
        (1.0, "(no target)", True),
        (0.9, ">= 0.95x", False),
        (2.0, "<= 1.05x", False),
        (2.0, "(no target)", True),
    ]
    whole = [level(VLLM_DEPLOYMENT, 4, 100, None), level(VLLM_DIRECT, 4, 100, None)]
    (only,) = llm_stats.vllm_ratios(whole, "w")
    assert (only.value, only.met) == (1.0, True)


def test_the_direct_vllm_pod_runs_the_deployments_server_container_on_the_hosts_files() -> None:
    children = yaml.safe_load_all((GOLDEN / "vllm.children.yaml").read_text())
    deployment = next(doc for doc in children if doc["kind"] == "Deployment")
    [rendered] = deployment["spec"]["template"]["spec"]["containers"]
    pod = direct_pod(deployment, "vllm-direct", Path("/data/tiny"))
    [server] = pod["spec"]["containers"]
    for key in ("image", "command", "args", "env", "resources", "securityContext", "volumeMounts", "ports"):
        assert server.get(key) == rendered.get(key), key
    assert "readinessProbe" in server
    assert not {"startupProbe", "livenessProbe", "lifecycle"} & server.keys()
    assert "initContainers" not in pod["spec"]
    assert "modelplane.io/name" not in pod["metadata"]["labels"]
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    assert volumes["model"] == {"name": "model", "hostPath": {"path": "/data/tiny", "type": "Directory"}}
    assert volumes["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory"}}


def test_both_vllm_servers_get_the_same_prompts_in_a_round_and_new_ones_the_next() -> None:
    assert turns(["a", "b"], 0) == ["a", "b"]
    assert turns(["a", "b"], 1) == ["b", "a"]
    starts = {first_index(w, c, r) for w in SHORT_WORKLOADS for c in CONCURRENCIES for r in range(3)}
    assert len(starts) == len(SHORT_WORKLOADS) * len(CONCURRENCIES) * 3
    body = SHORT_WORKLOADS[0].body(0, "tiny")
    assert body["model"] == "tiny"
    assert body["temperature"] == 0


def test_sse_lines_split_at_line_feeds_only() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b'data: {"t": "a\xe2\x80\xa8', b'b\xc2\x85c"}\r\n\r\ndata: [DO', b"NE]\n\n"):
            yield part

    async def lines() -> list[str]:
        return [line async for line in sse_lines(chunks())]

    assert asyncio.run(lines()) == ['data: {"t": "a\u2028b\x85c"}', "", "data: [DONE]", ""]
