"""The built-in LLM engine (format gguf) through a real `serve` process: the OpenAI contract,
sampling parameters, limits, continuous batching, queueing and disconnects, on a tiny random GGUF
written in the test."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.runtime import llm_contract as contract
from tests.runtime.llm_models import write_tiny_gguf
from tests.runtime.serving import RunningServer, serving

NAME = "tiny"
CONTEXT = 4096
WAIT_SECONDS = 60.0


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-gguf")
    write_tiny_gguf(directory / "model.gguf", context_length=CONTEXT)
    return directory


@pytest.fixture(scope="module")
def llm(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    args = ["--context-length", str(CONTEXT), "--max-sequences", "4", "--max-queue", "8"]
    with serving(tiny_model_dir, "gguf", tmp_path_factory.mktemp("logs"), name=NAME, args=args) as server:
        yield server


@pytest.fixture
def client(llm: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=llm.url, timeout=120) as http:
        yield http


def metrics(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def metric(server: RunningServer, name: str, **labels: str) -> float:
    key = (name, tuple(sorted({"model_name": NAME, **labels}.items())))
    return metrics(server).get(key, 0.0)


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def sse(response: httpx.Response) -> Iterator[Any]:
    """The data payloads of a server-sent event stream, [DONE] as the string itself."""
    for line in response.iter_lines():
        if not line:
            continue
        assert line.startswith("data: "), line
        data = line.removeprefix("data: ")
        yield data if data == "[DONE]" else json.loads(data)


def complete(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/completions", json={"model": NAME, "temperature": 0, **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# ------------------------------------------------------------------ the contract of every route


def test_the_contract_both_engines_pass(client: httpx.Client) -> None:
    """The checks tests/e2e/test_vllm_e2e.py runs against vLLM too (the tests below go further)."""
    contract.check_engine(client, NAME, CONTEXT)


def test_models_lists_the_served_model(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()
    contract.check(body, contract.MODEL_LIST)
    assert [model["id"] for model in body["data"]] == [NAME]


def test_chat_completion_has_the_openai_shape(client: httpx.Client) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": NAME,
            "messages": [{"role": "user", "content": "Hi there"}],
            "max_tokens": 8,
            "temperature": 0,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    contract.check(body, contract.CHAT_COMPLETION)
    assert body["usage"]["completion_tokens"] == 8
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["prompt_tokens"] > 3  # the template's tokens around the message


def test_chat_stream_is_server_sent_events_with_a_usage_chunk(client: httpx.Client) -> None:
    request = {
        "model": NAME,
        "messages": [{"role": "user", "content": "Tell me"}],
        "max_tokens": 12,
        "temperature": 0,
    }
    whole = client.post("/v1/chat/completions", json=request).json()
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={**request, "stream": True, "stream_options": {"include_usage": True}},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(sse(response))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        contract.check(chunk, contract.CHAT_CHUNK)
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == whole["usage"]
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert content == whole["choices"][0]["message"]["content"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]][-1] == "length"
    assert len(chunks) > 3


def test_completion_and_its_stream_agree(client: httpx.Client) -> None:
    whole = complete(client, prompt="The quick brown", max_tokens=10, logprobs=2)
    contract.check(whole, contract.COMPLETION)
    logprobs = whole["choices"][0]["logprobs"]
    assert len(logprobs["tokens"]) == whole["usage"]["completion_tokens"] == 10
    assert all(len(top) == 2 for top in logprobs["top_logprobs"])
    assert all(value <= 0 for value in logprobs["token_logprobs"])
    with httpx.stream(
        "POST",
        f"{str(client.base_url).rstrip('/')}/v1/completions",
        json={"model": NAME, "prompt": "The quick brown", "max_tokens": 10, "temperature": 0, "stream": True},
        timeout=60,
    ) as response:
        events = list(sse(response))
    assert events[-1] == "[DONE]"
    for chunk in events[:-1]:
        contract.check(chunk, contract.COMPLETION_CHUNK)
    assert "".join(c["choices"][0]["text"] for c in events[:-1]) == whole["choices"][0]["text"]


def test_stop_sequences_cut_the_text_before_them(client: httpx.Client) -> None:
    free = complete(client, prompt="Hello world", max_tokens=40)["choices"][0]["text"]
    middle = len(free) // 2
    stop = free[middle : middle + 3]
    assert len(stop) == 3, free
    cut = free.find(stop)
    stopped = complete(client, prompt="Hello world", max_tokens=40, stop=[stop, "never-appears"])
    assert stopped["choices"][0]["text"] == free[:cut]
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert stopped["usage"]["completion_tokens"] < 40


@pytest.mark.parametrize("max_tokens", [1, 5, 33])
def test_max_tokens_is_exact(client: httpx.Client, max_tokens: int) -> None:
    body = complete(client, prompt="Count", max_tokens=max_tokens)
    assert body["usage"]["completion_tokens"] == max_tokens
    assert body["choices"][0]["finish_reason"] == "length"


def test_a_seed_makes_sampling_reproducible_and_n_gives_distinct_choices(client: httpx.Client) -> None:
    request = {"prompt": "Once upon", "max_tokens": 16, "temperature": 1.0, "seed": 7}
    first, second = complete(client, **request), complete(client, **request)
    assert first["choices"][0]["text"] == second["choices"][0]["text"]
    several = complete(client, **request, n=3)
    assert sorted(choice["index"] for choice in several["choices"]) == [0, 1, 2]
    assert several["usage"]["completion_tokens"] == 48
    assert len({choice["text"] for choice in several["choices"]}) > 1


def test_json_mode_constrains_the_output(client: httpx.Client) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": NAME,
            "messages": [{"role": "user", "content": "json please"}],
            "max_tokens": 24,
            "temperature": 0,
            "response_format": {"type": "json_object"},
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"].lstrip().startswith(("{", "["))


# ------------------------------------------------------------------ refusals


def test_a_prompt_over_the_context_length_is_a_400_naming_the_limit(client: httpx.Client) -> None:
    response = client.post(
        "/v1/completions", json={"model": NAME, "prompt": "fox jumps " * 4000, "max_tokens": 1}
    )
    assert response.status_code == 400
    contract.check(response.json(), contract.ERROR)
    assert str(CONTEXT) in response.json()["error"]["message"]
    response = client.post("/v1/completions", json={"model": NAME, "prompt": "fox", "max_tokens": CONTEXT})
    assert response.status_code == 400
    assert str(CONTEXT) in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/v1/chat/completions", "frequency_penalty"),
        ("/v1/chat/completions", "tools"),
        ("/v1/completions", "best_of"),
        ("/v1/completions", "echo"),
    ],
)
def test_an_unsupported_parameter_is_a_400_naming_it(client: httpx.Client, path: str, parameter: str) -> None:
    body: dict[str, Any] = {"model": NAME, "max_tokens": 2, parameter: 1}
    body.update({"messages": [{"role": "user", "content": "x"}]} if "chat" in path else {"prompt": "x"})
    response = client.post(path, json=body)
    assert response.status_code == 400
    assert parameter in response.json()["error"]["message"]


def test_another_model_name_is_a_404(client: httpx.Client) -> None:
    response = client.post("/v1/completions", json={"model": "other", "prompt": "x"})
    assert response.status_code == 404
    contract.check(response.json(), contract.ERROR)


def test_an_embedding_request_to_a_generative_model_is_a_400(client: httpx.Client) -> None:
    assert client.post("/v1/embeddings", json={"model": NAME, "input": "x"}).status_code == 400


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
)
routes = st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
parameters = st.sampled_from(
    [
        "model",
        "messages",
        "prompt",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "n",
        "stream",
        "stream_options",
        "logprobs",
        "top_logprobs",
        "response_format",
        "input",
        "encoding_format",
        "max_completion_tokens",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=routes, raw=json_values.map(lambda value: json.dumps(value).encode()) | st.binary(max_size=40))
def test_any_malformed_body_is_a_4xx_never_a_500(client: httpx.Client, route: str, raw: bytes) -> None:
    response = client.post(route, content=raw, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, (raw, response.text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=routes, parameter=parameters, value=json_values)
def test_any_bad_parameter_value_is_a_4xx_never_a_500(
    client: httpx.Client, route: str, parameter: str, value: Any
) -> None:
    body: dict[str, Any] = {"model": NAME, "max_tokens": 3}
    if route == "/v1/chat/completions":
        body["messages"] = [{"role": "user", "content": "hi"}]
    elif route == "/v1/completions":
        body["prompt"] = "hi"
    else:
        body = {"model": NAME, "input": "hi"}
    body[parameter] = value
    response = client.post(route, json=body)
    assert response.status_code < 500, (body, response.text)


# ------------------------------------------------------------------ the scheduler at work


def _open_stream(
    server: RunningServer, max_tokens: int, prompt: str | list[int] = "Stream on"
) -> tuple[httpx.Client, httpx.Response, Iterator[Any]]:
    http = httpx.Client(base_url=server.url, timeout=120)
    request = http.build_request(
        "POST",
        "/v1/completions",
        json={
            "model": NAME,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
        },
    )
    response = http.send(request, stream=True)
    assert response.status_code == 200, response.read()
    events = sse(response)
    return http, response, events


def test_concurrent_requests_are_decoded_together(llm: RunningServer) -> None:
    bucket = "modelplane_llm_decode_step_sequences_bucket"
    before_single = metric(llm, bucket, le="1.0")
    before_steps = metric(llm, "modelplane_llm_decode_step_sequences_count")
    streams = [_open_stream(llm, max_tokens=CONTEXT - 16) for _ in range(4)]
    try:
        for _, _, events in streams:
            next(events)  # every request has its first token: all four are in the engine
        wait_for(lambda: metric(llm, "vllm:num_requests_running") == 4, "4 requests running")
    finally:
        for http, response, _ in streams:
            response.close()
            http.close()
    single = metric(llm, bucket, le="1.0") - before_single
    steps = metric(llm, "modelplane_llm_decode_step_sequences_count") - before_steps
    assert steps > single, "no decode step held more than one sequence"
    wait_for(lambda: metric(llm, "vllm:num_requests_running") == 0, "the closed streams to free their slots")


def test_a_long_prompt_is_read_in_chunks_beside_a_generating_sequence(llm: RunningServer) -> None:
    """Chunked prefill: while a sequence generates, a long prompt is read a chunk per step, each step
    also carrying the generating sequence's next token, rather than in one step that stalls it."""
    from modelplane_runtime.llm.scheduler import PROMPT_CHUNK_TOKENS

    def shared_steps() -> float:  # steps that decoded more than one sequence, from one scrape
        values, family = metrics(llm), "modelplane_llm_decode_step_sequences"
        count = values[(f"{family}_count", (("model_name", NAME),))]
        return count - values[(f"{family}_bucket", (("le", "1.0"), ("model_name", NAME)))]

    prompt = [50 + (position * 7) % 300 for position in range(6 * PROMPT_CHUNK_TOKENS)]
    http, response, events = _open_stream(llm, max_tokens=CONTEXT - 16)
    try:
        next(events)
        wait_for(lambda: metric(llm, "vllm:num_requests_running") == 1, "the stream to run")
        before = shared_steps()
        with httpx.Client(base_url=llm.url, timeout=60) as client:
            complete(client, prompt=prompt, max_tokens=1)
        shared = shared_steps() - before
    finally:
        response.close()
        http.close()
    assert shared >= len(prompt) // PROMPT_CHUNK_TOKENS - 1  # a chunk's worth may be a prefix cache hit
    wait_for(lambda: metric(llm, "vllm:num_requests_running") == 0, "the closed stream to free its slot")


def test_a_client_that_disconnects_stops_its_generation_and_frees_its_slot(llm: RunningServer) -> None:
    http, response, events = _open_stream(llm, max_tokens=CONTEXT - 16)
    next(events)
    next(events)
    wait_for(lambda: metric(llm, "vllm:num_requests_running") == 1, "the stream to run")
    response.close()
    http.close()
    wait_for(lambda: metric(llm, "vllm:num_requests_running") == 0, "the slot to be freed")
    stopped_at = metric(llm, "vllm:generation_tokens_total")
    # A short request still runs: the engine is alive, and the dropped one produced no more tokens.
    with httpx.Client(base_url=llm.url, timeout=60) as client:
        body = complete(client, prompt="after", max_tokens=3)
    assert metric(llm, "vllm:generation_tokens_total") == stopped_at + body["usage"]["completion_tokens"]
    assert metric(llm, "vllm:kv_cache_usage_perc") == 0


def _answer(llm: RunningServer, prompt: list[int]) -> tuple[str, float]:
    """The completion of PROMPT at temperature 0, and how many of its tokens the prefix cache held."""
    hits = metric(llm, "vllm:prefix_cache_hits_total")
    with httpx.Client(base_url=llm.url, timeout=60) as client:
        text = complete(client, prompt=prompt, max_tokens=12)["choices"][0]["text"]
    return text, metric(llm, "vllm:prefix_cache_hits_total") - hits


def test_a_prompt_that_starts_like_an_earlier_one_decodes_only_the_rest(llm: RunningServer) -> None:
    """The prefix cache: the KV cells of the tokens a prompt shares with an earlier one are reused
    (counted by vLLM's prefix-cache counters), and the answers are the ones decoded from scratch."""
    first = list(range(200, 240))
    second = first[:20] + list(range(300, 310))

    queried = metric(llm, "vllm:prefix_cache_queries_total")
    text, _ = _answer(llm, first)
    assert _answer(llm, second)[1] == 20
    assert _answer(llm, first) == (text, 20)  # the shared part came from the second prompt's cells
    assert _answer(llm, first) == (text, len(first) - 1)  # all but the last, decoded for its logits
    assert metric(llm, "vllm:prefix_cache_queries_total") - queried == 3 * len(first) + len(second)


def test_a_prompt_that_starts_like_a_running_one_gets_its_cells_copied_into_another_slot(
    llm: RunningServer,
) -> None:
    """Each slot has a KV stream of its own, so a prompt that matches a slot still generating is given
    a copy of those cells in a free slot (llama.cpp copies streams whole; the tail is cut): its answer
    is the one decoded from scratch."""
    ours = list(range(350, 380))  # tokens no other test sends: nothing held matches them
    theirs = ours[:20] + list(range(380, 395))

    from_scratch, hits = _answer(llm, ours)
    assert hits == 0
    # The stream takes the free slot that holds `ours` (its best match) and keeps it while it runs.
    http, response, events = _open_stream(llm, max_tokens=CONTEXT - 64, prompt=theirs)
    try:
        next(events)
        wait_for(lambda: metric(llm, "vllm:num_requests_running") == 1, "the stream to run")
        assert _answer(llm, ours) == (from_scratch, 20)
    finally:
        response.close()
        http.close()
    wait_for(lambda: metric(llm, "vllm:num_requests_running") == 0, "the closed stream to free its slot")


def test_token_counters_add_up_to_the_usage_returned(llm: RunningServer) -> None:
    prompt_before = metric(llm, "vllm:prompt_tokens_total")
    generated_before = metric(llm, "vllm:generation_tokens_total")
    with httpx.Client(base_url=llm.url, timeout=60) as client:
        usages = [complete(client, prompt="Sum me up", max_tokens=count)["usage"] for count in (2, 7, 11)]
    assert metric(llm, "vllm:prompt_tokens_total") - prompt_before == sum(u["prompt_tokens"] for u in usages)
    assert metric(llm, "vllm:generation_tokens_total") - generated_before == sum(
        u["completion_tokens"] for u in usages
    )
    assert metric(llm, "vllm:time_to_first_token_seconds_count") > 0
    assert metric(llm, "vllm:inter_token_latency_seconds_count") > 0
    assert metric(llm, "vllm:e2e_request_latency_seconds_count") > 0


def test_past_the_queue_new_requests_get_a_503_with_retry_after(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    args = ["--context-length", str(CONTEXT), "--max-sequences", "1", "--max-queue", "1"]
    with serving(tiny_model_dir, "gguf", tmp_path_factory.mktemp("logs"), name=NAME, args=args) as server:
        running = _open_stream(server, max_tokens=CONTEXT - 16)
        next(running[2])
        waiting = _open_stream_in_thread(server)
        try:
            wait_for(lambda: metric(server, "vllm:num_requests_waiting") == 1, "one request waiting")
            with httpx.Client(base_url=server.url, timeout=30) as client:
                response = client.post(
                    "/v1/completions", json={"model": NAME, "prompt": "x", "max_tokens": 1}
                )
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            contract.check(response.json(), contract.ERROR)
        finally:
            running[1].close()
            running[0].close()
        waiting.join(WAIT_SECONDS)
        assert not waiting.is_alive()
        assert waiting.status == 200  # the waiting one got the freed slot


class _Request(threading.Thread):
    def __init__(self, server: RunningServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.status = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=120) as client:
            response = client.post("/v1/completions", json={"model": NAME, "prompt": "wait", "max_tokens": 2})
            self.status = response.status_code


def _open_stream_in_thread(server: RunningServer) -> _Request:
    request = _Request(server)
    request.start()
    return request


# ------------------------------------------------------------------ embeddings and load failures


def test_an_embedding_model_serves_normalized_vectors(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    write_tiny_gguf(tmp_path / "model" / "embed.gguf", embedding=True)
    with (
        serving(tmp_path / "model", "gguf", tmp_path, name=NAME, args=["--context-length", "256"]) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        response = client.post("/v1/embeddings", json={"model": NAME, "input": ["hello world", "fox"]})
        assert response.status_code == 200, response.text
        body = response.json()
        contract.check(body, contract.EMBEDDINGS)
        vectors = [item["embedding"] for item in body["data"]]
        assert [len(vector) for vector in vectors] == [64, 64]
        assert all(abs(sum(x * x for x in vector) - 1) < 1e-3 for vector in vectors)
        assert vectors[0] != vectors[1]
        chat = client.post(
            "/v1/chat/completions", json={"model": NAME, "messages": [{"role": "user", "content": "x"}]}
        )
        assert chat.status_code == 400


def test_an_architecture_the_engine_cannot_load_fails_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    write_tiny_gguf(tmp_path / "model" / "odd.gguf", architecture="nosucharch")
    from tests.runtime.serving import start_server

    server = start_server(tmp_path / "model", "gguf", tmp_path, name=NAME)
    assert server.process.wait(WAIT_SECONDS) == 1
    lines = [line for line in server.log().splitlines() if line.startswith("ModelLoadFailed: ")]
    assert len(lines) == 1, server.log()
    assert "nosucharch" in lines[0]


def test_a_context_too_large_for_the_memory_limit_is_refused_before_allocating(tiny_model_dir: Path) -> None:
    from modelplane_runtime.errors import ModelLoadError
    from modelplane_runtime.llm.llamacpp import EngineConfig, LlamaEngine

    with pytest.raises(ModelLoadError, match="does not fit the memory limit of 100 MiB"):
        LlamaEngine(
            tiny_model_dir / "model.gguf", EngineConfig(context_length=CONTEXT, max_sequences=64), 100 * 2**20
        )


def test_one_request_in_flight_matches_llama_cpp_python_on_the_same_file(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Greedy text and logprob tokens equal those of llama-cpp-python's own Llama class (the reference,
    used only here) with the same context, batch and thread settings."""
    from llama_cpp import Llama

    prompt, tokens = "The quick brown fox", 24
    reference = Llama(
        str(tiny_model_dir / "model.gguf"),
        n_ctx=512,
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
    args = ["--context-length", "512", "--max-sequences", "1"]
    with (
        serving(tiny_model_dir, "gguf", tmp_path_factory.mktemp("logs"), name=NAME, args=args) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        ours = complete(client, prompt=prompt, max_tokens=tokens, logprobs=1)
    # The random model's byte-level tokens join into invalid UTF-8 at places: llama-cpp-python drops
    # those bytes, we show each as U+FFFD (as Hugging Face tokenizers and vLLM do). Otherwise equal.
    assert ours["choices"][0]["text"].replace("\ufffd", "") == expected["choices"][0]["text"]
    ours_tokens = [token.replace("\ufffd", "") for token in ours["choices"][0]["logprobs"]["tokens"]]
    expected_tokens = [token.replace("\ufffd", "") for token in expected["choices"][0]["logprobs"]["tokens"]]
    assert ours_tokens == expected_tokens
    # Values agree to rounding: our context holds the KV cells of every sequence, so its float sums
    # run in another order than a one-sequence context's.
    expected_logprobs = expected["choices"][0]["logprobs"]["token_logprobs"]
    assert ours["choices"][0]["logprobs"]["token_logprobs"] == pytest.approx(expected_logprobs, abs=0.05)
    assert ours["usage"] == expected["usage"]
