"""Every Prometheus metric of the runtime, in one place; correct across worker processes.

Workers are forked processes, so metrics use prometheus_client's multiprocess mode: each process
writes its values to files in a directory under /tmp and ``/metrics`` (in any worker) adds them
up. :func:`use_directory` must run before ``prometheus_client`` is first imported.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from bisect import bisect_left
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import modelplane_contract as contract

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
FLUSH_SECONDS = 1.0
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
#: Distinct consumers one process labels; past it, "_other" (no consumer name has "_"). The gateway
#: only forwards client ids of the platform's consumer Secrets; this bounds a direct caller's guesses.
MAX_CONSUMERS = 256
OTHER_CONSUMER = "_other"


def use_directory(parent: str | None = None) -> Path:
    """A fresh directory for this server's metric files, announced to prometheus_client."""
    directory = Path(tempfile.mkdtemp(prefix="modelplane-metrics-", dir=parent))
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def remove_directory(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


class Metrics:
    def __init__(self, model: str) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.model = model
        self.requests = Counter(
            contract.METRIC_REQUESTS_TOTAL.removesuffix("_total"),
            "Inference requests by model, protocol and status code.",
            ["model", "protocol", "code"],
        )
        self.latency = Histogram(
            contract.METRIC_REQUEST_SECONDS,
            "Inference request latency in seconds, from request read to response written.",
            ["model", "protocol"],
            buckets=LATENCY_BUCKETS,
        )
        self.in_flight = Gauge(
            contract.METRIC_IN_FLIGHT,
            "Inference requests being served.",
            ["model"],
            multiprocess_mode="livesum",
        )
        self.batch_size = Histogram(
            contract.METRIC_BATCH_SIZE, "Rows per model call.", ["model"], buckets=BATCH_BUCKETS
        )
        self.queue_wait = Histogram(
            contract.METRIC_QUEUE_WAIT_SECONDS,
            "Seconds a request waited in the batch queue before its model call.",
            ["model"],
            buckets=LATENCY_BUCKETS,
        )
        self.fill_waits = Counter(
            contract.METRIC_BATCH_FILL_WAITS_TOTAL.removesuffix("_total"),
            "Model calls held open (at most the batch window) to take requests still arriving.",
            ["model"],
        )
        self.load_seconds = Gauge(
            contract.METRIC_MODEL_LOAD_SECONDS,
            "Seconds to load and warm up the model.",
            ["model"],
            multiprocess_mode="max",
        )
        self.pull_seconds = Gauge(
            contract.METRIC_PULL_SECONDS,
            "Seconds the artifact pull took.",
            ["model"],
            multiprocess_mode="max",
        )
        self.pull_bytes = Gauge(
            contract.METRIC_PULL_BYTES, "Bytes of the pulled artifact.", ["model"], multiprocess_mode="max"
        )
        self.consumer_requests = Counter(
            contract.METRIC_CONSUMER_REQUESTS_TOTAL.removesuffix("_total"),
            "Inference requests by model, consumer (from the gateway's client id) and status code.",
            ["model", "consumer", "code"],
        )
        self.consumer_tokens = Counter(
            contract.METRIC_CONSUMER_TOKENS_TOTAL.removesuffix("_total"),
            "Language-model tokens by model, consumer and kind (prompt or completion).",
            ["model", "consumer", "kind"],
        )
        # The hot path only adds to these plain numbers; flush() writes them to the shared files
        # (each write there takes a lock and an mmap update), at most FLUSH_SECONDS late.
        self.in_flight_now = 0
        self._requests: dict[tuple[str, int], int] = {}
        self._latency: dict[str, _PendingHistogram] = {}
        self._batch = _PendingHistogram(BATCH_BUCKETS)
        self._wait = _PendingHistogram(LATENCY_BUCKETS)
        self._fill_waits = 0
        self._consumers: set[str] = set()
        self._consumer_requests: dict[tuple[str, int], int] = {}
        self._consumer_tokens: dict[tuple[str, str], int] = {}

    def consumer_label(self, consumer: str) -> str:
        """CONSUMER, or OTHER_CONSUMER once this process has labelled MAX_CONSUMERS others."""
        if consumer in self._consumers:
            return consumer
        if len(self._consumers) >= MAX_CONSUMERS:
            return OTHER_CONSUMER
        self._consumers.add(consumer)
        return consumer

    def observe_consumer(self, consumer: str, code: int) -> None:
        key = (self.consumer_label(consumer), code)
        self._consumer_requests[key] = self._consumer_requests.get(key, 0) + 1

    def observe_consumer_tokens(self, consumer: str, prompt: int, completion: int) -> None:
        label = self.consumer_label(consumer)
        for kind, count in (("prompt", prompt), ("completion", completion)):
            if count:
                key = (label, kind)
                self._consumer_tokens[key] = self._consumer_tokens.get(key, 0) + count

    def observe_request(self, protocol: str, code: int, seconds: float) -> None:
        key = (protocol, code)
        self._requests[key] = self._requests.get(key, 0) + 1
        pending = self._latency.get(protocol)
        if pending is None:
            pending = self._latency[protocol] = _PendingHistogram(LATENCY_BUCKETS)
        pending.observe(seconds)

    def observe_batch(self, rows: int, waits: Sequence[float], held: bool = False) -> None:
        self._batch.observe(rows)
        self._fill_waits += held
        for wait in waits:
            self._wait.observe(wait)

    def flush(self) -> None:
        """Write what the hot path gathered to the multiprocess files."""
        model = self.model
        requests, self._requests = self._requests, {}
        for (protocol, code), count in requests.items():
            self.requests.labels(model, protocol, str(code)).inc(count)
        consumer_requests, self._consumer_requests = self._consumer_requests, {}
        for (consumer, code), count in consumer_requests.items():
            self.consumer_requests.labels(model, consumer, str(code)).inc(count)
        consumer_tokens, self._consumer_tokens = self._consumer_tokens, {}
        for (consumer, kind), count in consumer_tokens.items():
            self.consumer_tokens.labels(model, consumer, kind).inc(count)
        for protocol, pending in self._latency.items():
            pending.flush_into(self.latency.labels(model, protocol))
        self._batch.flush_into(self.batch_size.labels(model))
        self._wait.flush_into(self.queue_wait.labels(model))
        fill_waits, self._fill_waits = self._fill_waits, 0
        self.fill_waits.labels(model).inc(fill_waits)
        self.in_flight.labels(model).set(self.in_flight_now)

    def record_load(self, seconds: float, pull_record: dict[str, Any] | None) -> None:
        self.load_seconds.labels(self.model).set(seconds)
        if pull_record:
            if isinstance(pull_record.get("bytes"), int | float):
                self.pull_bytes.labels(self.model).set(pull_record["bytes"])
            if isinstance(pull_record.get("seconds"), int | float):
                self.pull_seconds.labels(self.model).set(pull_record["seconds"])


TOKEN_LATENCY_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)
STEP_SEQUENCE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)


class LLMMetrics:
    """A language model's engine metrics, under vLLM's names; the scheduler's observer.

    The engine runs in one process and reports once per decode step, so these write straight to
    the multiprocess files (no pending buffer as for the per-request hot path above).
    """

    def __init__(self, model: str) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        labels = ["model_name"]
        self.running = Gauge(
            contract.METRIC_LLM_RUNNING, "Requests being decoded.", labels, multiprocess_mode="livemax"
        ).labels(model)
        self.waiting = Gauge(
            contract.METRIC_LLM_WAITING,
            "Requests waiting for a free sequence.",
            labels,
            multiprocess_mode="livemax",
        ).labels(model)
        self.kv_usage = Gauge(
            contract.METRIC_LLM_KV_USAGE,
            "Share of KV-cache cells in use (1 is full).",
            labels,
            multiprocess_mode="livemax",
        ).labels(model)
        self.prompt_tokens = Counter(
            contract.METRIC_LLM_PROMPT_TOKENS.removesuffix("_total"), "Prompt tokens read.", labels
        ).labels(model)
        self.generation_tokens = Counter(
            contract.METRIC_LLM_GENERATION_TOKENS.removesuffix("_total"), "Tokens generated.", labels
        ).labels(model)
        self.prefix_queries = Counter(
            contract.METRIC_LLM_PREFIX_CACHE_QUERIES.removesuffix("_total"),
            "Prompt tokens looked up in the prefix cache.",
            labels,
        ).labels(model)
        self.prefix_hits = Counter(
            contract.METRIC_LLM_PREFIX_CACHE_HITS.removesuffix("_total"),
            "Prompt tokens whose KV cells the prefix cache held (not decoded again).",
            labels,
        ).labels(model)
        self.ttft = Histogram(
            contract.METRIC_LLM_TTFT_SECONDS,
            "Seconds from arrival to the first token.",
            labels,
            buckets=TOKEN_LATENCY_BUCKETS,
        ).labels(model)
        self.itl = Histogram(
            contract.METRIC_LLM_ITL_SECONDS,
            "Seconds between two tokens of a sequence.",
            labels,
            buckets=TOKEN_LATENCY_BUCKETS,
        ).labels(model)
        self.e2e = Histogram(
            contract.METRIC_LLM_E2E_SECONDS,
            "Seconds from arrival to the last token.",
            labels,
            buckets=REQUEST_LATENCY_BUCKETS,
        ).labels(model)
        self.step_sequences = Histogram(
            contract.METRIC_LLM_STEP_SEQUENCES,
            "Sequences decoded together in one engine step (continuous batching at work when above 1).",
            labels,
            buckets=STEP_SEQUENCE_BUCKETS,
        ).labels(model)
        self._state: tuple[int, int, float] | None = None

    def step(self, sequences: int, tokens: int) -> None:  # noqa: ARG002 - the Observer protocol's shape
        self.step_sequences.observe(sequences)

    def state(self, running: int, waiting: int, kv_usage: float) -> None:
        state = (running, waiting, round(kv_usage, 4))
        if state != self._state:  # a steady engine writes nothing
            self._state = state
            self.running.set(running)
            self.waiting.set(waiting)
            self.kv_usage.set(state[2])

    def prompt(self, tokens: int) -> None:
        self.prompt_tokens.inc(tokens)

    def prefix_cache(self, queried: int, hits: int) -> None:
        self.prefix_queries.inc(queried)
        if hits:
            self.prefix_hits.inc(hits)

    def generated(self, tokens: int) -> None:
        self.generation_tokens.inc(tokens)

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def inter_token(self, seconds: float) -> None:
        self.itl.observe(seconds)

    def finished(self, seconds: float) -> None:
        self.e2e.observe(seconds)


class _PendingHistogram:
    """Observations not yet written, bucketed as prometheus_client buckets them (first bound >= value)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(bounds)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._dirty = False

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value
        self._dirty = True

    def flush_into(self, child: Any) -> None:
        if not self._dirty:
            return
        add_to_histogram(child, self._counts, self._sum)
        self._counts = [0] * len(self._counts)
        self._sum = 0.0
        self._dirty = False


def add_to_histogram(child: Any, bucket_counts: Sequence[int], total: float) -> None:
    """Add whole counts per bucket (the last is +Inf) and their sum to one labelled histogram.

    prometheus_client has no public call for it: observe() takes one value, and in multiprocess mode
    each call takes a lock and writes the shared file. So this, the one place in the project that
    does, adds to the private values observe() adds to, one per bucket (``_buckets``) and the sum
    (``_sum``). tests/runtime/test_prometheus_internals.py fails on a prometheus_client that changes
    them (the constraints file pins the version the test passed on).
    """
    buckets = child._buckets  # noqa: SLF001 - the fence described above
    if len(buckets) != len(bucket_counts):
        raise ValueError(f"{len(bucket_counts)} bucket counts for a histogram of {len(buckets)} buckets")
    for bucket, count in zip(buckets, bucket_counts, strict=True):
        if count:
            bucket.inc(count)
    child._sum.inc(total)  # noqa: SLF001 - the fence described above


def exposition() -> tuple[bytes, str]:
    """The text of ``/metrics``: every process's values added up."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def process_exited(pid: int) -> None:
    """Forget a dead worker's live gauges (called by the supervisor)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
