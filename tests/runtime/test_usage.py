"""Usage per consumer (spec.access): the runtime counts each request, and a language model's tokens,
against the consumer named by the gateway-set client id header, through real `serve` processes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import modelplane_contract as contract
import pytest
from modelplane_runtime.grpc.generated import inference_pb2 as pb
from modelplane_runtime.grpc.generated import inference_pb2_grpc as pb_grpc
from modelplane_runtime.metrics import MAX_CONSUMERS, OTHER_CONSUMER
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression

from tests.runtime.llm_models import write_tiny_gguf
from tests.runtime.serving import RunningServer, serving

REQUESTS = contract.METRIC_CONSUMER_REQUESTS_TOTAL
TOKENS = contract.METRIC_CONSUMER_TOKENS_TOTAL
ROW = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(server: RunningServer) -> Samples:
    text = httpx.get(f"{server.url}{contract.METRICS_PATH}", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def usage(server: RunningServer, name: str = REQUESTS, **labels: str) -> float:
    """The sum of NAME's samples whose labels include LABELS."""
    wanted = set(labels.items())
    return sum(
        value for (sample, found), value in samples(server).items() if sample == name and wanted <= set(found)
    )


def settled(read: Callable[[], float], expected: float) -> float:
    """READ once the workers flushed (they write the shared files at least once a second)."""
    deadline = time.monotonic() + 10
    value = read()
    while value < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        value = read()
    return value


def predict(server: RunningServer, client_id: str | None = None, rows: object = ROW) -> int:
    headers = {contract.CONSUMER_HEADER: client_id} if client_id is not None else {}
    return httpx.post(
        f"{server.url}/v1/models/iris:predict", json=rows, headers=headers, timeout=30
    ).status_code


@pytest.fixture(scope="module")
def iris(
    iris_model: tuple[Path, LogisticRegression], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """Two workers: the counts of both add up in /metrics."""
    model_dir, _ = iris_model
    logs = tmp_path_factory.mktemp("usage-logs")
    with serving(model_dir, "sklearn", logs, name="iris", args=["--workers", "2"]) as server:
        yield server


def test_requests_are_counted_per_consumer_and_code_across_key_ids(iris: RunningServer) -> None:
    for _ in range(3):
        assert predict(iris, "alice.1") == 200
    assert predict(iris, "alice.2") == 200  # the rotated key is the same consumer
    assert predict(iris, "bob.1") == 200
    assert predict(iris, "bob.1", {"instances": [[1.0]]}) == 400  # an error, billed as such
    assert settled(lambda: usage(iris, consumer="alice", code="200"), 4) == 4
    assert settled(lambda: usage(iris, consumer="bob"), 2) == 2
    assert usage(iris, consumer="bob", code="400") == 1
    series = [labels for (name, labels) in samples(iris) if name == REQUESTS]
    assert all(dict(labels)["model"] == "iris" for labels in series)
    # The key id is no label: usage is by consumer.
    assert {dict(labels)["consumer"] for labels in series} >= {"alice", "bob"}
    assert not any("." in dict(labels)["consumer"] for labels in series)


def test_requests_without_a_client_id_or_with_another_shape_are_not_billed(iris: RunningServer) -> None:
    before = usage(iris)
    for client_id in (None, "", "alice", "alice.3", "Alice.1", "sk-0123456789abcdef"):
        assert predict(iris, client_id) == 200
    assert predict(iris, "carol.1") == 200  # a marker: once it shows, the requests before were flushed
    assert settled(lambda: usage(iris, consumer="carol"), 1) == 1
    assert usage(iris) == before + 1


def test_grpc_requests_are_counted_from_the_metadata(iris: RunningServer) -> None:
    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP64", shape=[1, 4])
    tensor.contents.fp64_contents.extend([5.1, 3.5, 1.4, 0.2])
    request = pb.ModelInferRequest(model_name="iris", inputs=[tensor])
    with grpc.insecure_channel(f"127.0.0.1:{iris.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        for _ in range(2):
            stub.ModelInfer(request, metadata=[(contract.CONSUMER_HEADER, "dave.2")])
    assert settled(lambda: usage(iris, consumer="dave", code="200"), 2) == 2


def test_the_consumer_label_is_bounded(
    iris_model: tuple[Path, LogisticRegression], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A direct caller (past the gateway, from a namespace spec.access lists) can send any client id:
    past MAX_CONSUMERS distinct consumers a process counts the rest as one."""
    model_dir, _ = iris_model
    logs = tmp_path_factory.mktemp("bounded-logs")
    with serving(model_dir, "sklearn", logs, name="iris", args=["--workers", "1"]) as server:
        extra = 5
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for index in range(MAX_CONSUMERS + extra):
                response = client.post(
                    "/v1/models/iris:predict", json=ROW, headers={contract.CONSUMER_HEADER: f"c{index}.1"}
                )
                assert response.status_code == 200
        assert settled(lambda: usage(server, consumer=OTHER_CONSUMER), extra) == extra
        consumers = {dict(labels)["consumer"] for (name, labels) in samples(server) if name == REQUESTS}
        assert len(consumers) == MAX_CONSUMERS + 1
        assert usage(server) == MAX_CONSUMERS + extra


def test_a_shadow_track_bills_nobody(
    iris_model: tuple[Path, LogisticRegression], tmp_path_factory: pytest.TempPathFactory
) -> None:
    model_dir, _ = iris_model
    logs = tmp_path_factory.mktemp("shadow-logs")
    env = {contract.ENV_USAGE: "false"}
    with serving(model_dir, "sklearn", logs, name="iris", args=["--workers", "1"], env=env) as server:
        for _ in range(3):
            assert predict(server, "alice.1") == 200
        requests = f'{contract.METRIC_REQUESTS_TOTAL}{{code="200",model="iris",protocol="v1"}}'
        assert settled(lambda: _value(server, requests), 3) == 3  # served and counted as requests
        assert usage(server) == 0  # but billed to no one


def _value(server: RunningServer, line_start: str) -> float:
    text = httpx.get(f"{server.url}{contract.METRICS_PATH}", timeout=10).text
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0


# A language model: tokens per consumer equal the usage the answers reported.


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("usage-gguf")
    write_tiny_gguf(directory / "model.gguf", context_length=512)
    args = ["--context-length", "512", "--max-sequences", "2"]
    with serving(
        directory, "gguf", tmp_path_factory.mktemp("usage-llm-logs"), name="tiny", args=args
    ) as server:
        yield server


def test_tokens_are_counted_per_consumer_as_the_answers_report_them(llm: RunningServer) -> None:
    prompt, completion = 0, 0
    with httpx.Client(base_url=llm.url, timeout=120) as client:
        headers = {contract.CONSUMER_HEADER: "erin.1"}
        body = {"model": "tiny", "prompt": "hello there", "max_tokens": 5, "temperature": 0}
        whole = client.post("/v1/completions", json=body, headers=headers)
        assert whole.status_code == 200, whole.text
        prompt += whole.json()["usage"]["prompt_tokens"]
        completion += whole.json()["usage"]["completion_tokens"]
        chat = {
            "model": "tiny",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with client.stream("POST", "/v1/chat/completions", json=chat, headers=headers) as stream:
            assert stream.status_code == 200
            reported = [
                line for line in stream.iter_lines() if '"usage"' in line and '"prompt_tokens"' in line
            ]
        last = httpx.Response(200, content=reported[-1].removeprefix("data: ")).json()["usage"]
        prompt += last["prompt_tokens"]
        completion += last["completion_tokens"]
    assert settled(lambda: usage(llm, TOKENS, consumer="erin", kind="prompt"), prompt) == prompt
    assert settled(lambda: usage(llm, TOKENS, consumer="erin", kind="completion"), completion) == completion
    assert settled(lambda: usage(llm, consumer="erin", code="200"), 2) == 2
