"""The contract between the operator and the runtime: the single definition of both sides.

The operator renders pods against these names and the runtime reads them. This one source file is
packaged into both distributions (the operator's pyproject.toml at the repository root and
runtime-image/pyproject.toml), so each installs and imports on its own; it imports nothing but the
standard library, so it adds no dependency to either.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

# Commands (the image's entry point is `modelplane-runtime`).
RUNTIME_COMMAND: Final = "modelplane-runtime"
PULL_SUBCOMMAND: Final = "pull"
SERVE_SUBCOMMAND: Final = "serve"
OPTIMIZE_SUBCOMMAND: Final = "optimize"

# Container and volume layout rendered by the operator.
PULL_CONTAINER_NAME: Final = "model-pull"
OPTIMIZE_CONTAINER_NAME: Final = "model-optimize"  # an init container after the pull
SERVER_CONTAINER_NAME: Final = "model-server"
MODEL_VOLUME_NAME: Final = "model"
MODEL_DIR: Final = "/mnt/models"
TMP_VOLUME_NAME: Final = "tmp"
TMP_DIR: Final = "/tmp"

# Ports and paths.
HTTP_PORT: Final = 8080
GRPC_PORT: Final = 8081
HTTP_PORT_NAME: Final = "http"
GRPC_PORT_NAME: Final = "grpc"
LIVE_PATH: Final = "/v2/health/live"
READY_PATH: Final = "/v2/health/ready"
METRICS_PATH: Final = "/metrics"

# Environment variables. Every `serve`/`pull` flag has one of these as its default source.
ENV_MODEL_URI: Final = "MODELPLANE_MODEL_URI"
ENV_MODEL_DIGEST: Final = "MODELPLANE_MODEL_DIGEST"
ENV_MODEL_DIR: Final = "MODELPLANE_MODEL_DIR"
ENV_MODEL_FORMAT: Final = "MODELPLANE_MODEL_FORMAT"
ENV_MODEL_NAME: Final = "MODELPLANE_MODEL_NAME"
ENV_MODEL_VERSION: Final = "MODELPLANE_MODEL_VERSION"
ENV_ALLOW_PICKLE: Final = "MODELPLANE_ALLOW_PICKLE"
ENV_HTTP_PORT: Final = "MODELPLANE_HTTP_PORT"
ENV_GRPC_PORT: Final = "MODELPLANE_GRPC_PORT"
ENV_PROTOCOLS: Final = "MODELPLANE_PROTOCOLS"  # comma list of v1,v2,grpc
ENV_WORKERS: Final = "MODELPLANE_WORKERS"
ENV_BATCHING: Final = "MODELPLANE_BATCHING"  # "true" / "false"
ENV_MAX_BATCH_SIZE: Final = "MODELPLANE_MAX_BATCH_SIZE"
ENV_MAX_LATENCY_MS: Final = "MODELPLANE_MAX_LATENCY_MS"
ENV_REQUEST_TIMEOUT_SECONDS: Final = "MODELPLANE_REQUEST_TIMEOUT_SECONDS"
ENV_MAX_QUEUE: Final = "MODELPLANE_MAX_QUEUE"
ENV_MAX_BODY_BYTES: Final = "MODELPLANE_MAX_BODY_BYTES"
ENV_PULL_STALL_SECONDS: Final = "MODELPLANE_PULL_STALL_SECONDS"
ENV_PULL_RETRIES: Final = "MODELPLANE_PULL_RETRIES"
ENV_PULL_BACKOFF_SECONDS: Final = "MODELPLANE_PULL_BACKOFF_SECONDS"  # first retry's delay; doubles
ENV_PULL_CONCURRENCY: Final = "MODELPLANE_PULL_CONCURRENCY"  # files fetched at once
ENV_CUSTOM_CLASS: Final = "MODELPLANE_CUSTOM_CLASS"  # package.module:Class, for format custom
ENV_MODEL_SIGNATURE: Final = "MODELPLANE_MODEL_SIGNATURE"  # a SavedModel's signature, for format tensorflow
# After SIGTERM: serve on for DRAIN seconds (while the Service's endpoints drop the pod), then
# give in-flight requests SHUTDOWN_GRACE seconds.
ENV_DRAIN_SECONDS: Final = "MODELPLANE_DRAIN_SECONDS"
ENV_SHUTDOWN_GRACE_SECONDS: Final = "MODELPLANE_SHUTDOWN_GRACE_SECONDS"
# spec.model.optimize as compact JSON: {"onnx": bool, "quantize": "int8" | null, "gate": {...}}.
ENV_OPTIMIZE: Final = "MODELPLANE_OPTIMIZE"
# Language models (format gguf): tokens per sequence, sequences decoded together, engine threads.
ENV_CONTEXT_LENGTH: Final = "MODELPLANE_CONTEXT_LENGTH"
ENV_MAX_SEQUENCES: Final = "MODELPLANE_MAX_SEQUENCES"
ENV_ENGINE_THREADS: Final = "MODELPLANE_ENGINE_THREADS"

PROTOCOL_V1: Final = "v1"
PROTOCOL_V2: Final = "v2"
PROTOCOL_GRPC: Final = "grpc"
PROTOCOL_OPENAI: Final = "openai"  # /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings
PROTOCOLS: Final = (PROTOCOL_V1, PROTOCOL_V2, PROTOCOL_GRPC, PROTOCOL_OPENAI)

FORMATS: Final = (
    "sklearn",
    "xgboost",
    "lightgbm",
    "onnx",
    "tensorflow",
    "pytorch",
    "huggingface",
    "custom",
    "gguf",
)
#: Formats served by a language-model engine over the OpenAI API, in one process per pod.
LLM_FORMATS: Final = frozenset({"gguf"})

# A v2 inference request shipped beside the artifact: serve warms the model up with it.
WARMUP_REQUEST_FILE: Final = "sample-request.json"

# What `pull` leaves beside the model so that `serve` can report what it serves.
PULL_RECORD_FILE: Final = ".modelplane-pull.json"  # {"uri": ..., "digest": "sha256:...", "bytes": N}

# What `optimize` leaves beside the model (in a directory the format loaders do not look into):
# the optimized artifact and its record; `serve` serves it when the record says it passed the gate.
OPTIMIZED_DIR: Final = ".modelplane-optimized"
OPTIMIZED_RECORD_FILE: Final = "record.json"
OPTIMIZED_MODEL_FILE: Final = "model.onnx"
#: Formats that have an ONNX form (converted, or already ONNX); int8 applies to that form only.
OPTIMIZE_ONNX_FORMATS: Final = ("sklearn", "xgboost", "lightgbm", "tensorflow", "onnx")
QUANTIZE_MODES: Final = ("int8",)
# The accuracy gate's defaults: classifiers' labels agree on this share of the sample, and every
# number (a regressor's value, a probability) is within the absolute OR the relative error.
GATE_MIN_AGREEMENT: Final = 0.99
GATE_MAX_ABS_ERROR: Final = 0.1
GATE_MAX_REL_ERROR: Final = 0.01
# Reasons `optimize` writes first on its one-line termination message, "<Reason>: <JSON>".
REASON_OPTIMIZED: Final = "Optimized"
REASON_OPTIMIZATION_REJECTED: Final = "OptimizationRejected"  # below the gate: the original is served
REASON_OPTIMIZATION_FAILED: Final = "OptimizationFailed"  # could not convert: the original is served
OPTIMIZE_REASONS: Final = (REASON_OPTIMIZED, REASON_OPTIMIZATION_REJECTED, REASON_OPTIMIZATION_FAILED)

# Exit codes of `pull`: the operator tells a permanent failure from a transient one by these.
EXIT_OK: Final = 0
EXIT_USAGE: Final = 2
EXIT_PERMANENT: Final = 10
EXIT_TRANSIENT: Final = 11

# Reasons `pull` writes first on its one-line failure message, "<Reason>: <message>".
REASON_NOT_FOUND: Final = "ModelNotFound"
REASON_ACCESS_DENIED: Final = "AccessDenied"
REASON_DIGEST_MISMATCH: Final = "DigestMismatch"
REASON_UNSUPPORTED: Final = "UnsupportedArtifact"
REASON_INVALID_URI: Final = "InvalidURI"
REASON_INVALID_ARGUMENT: Final = "InvalidArgument"
REASON_TRANSIENT: Final = "TransientPullError"
# On success `pull` writes "Pulled: <uri> <sha256:...> (<N> bytes)" (format_pulled_message): the
# operator reports the digest served, and for a model cache's fill Job, the bytes the cache holds.
REASON_PULLED: Final = "Pulled"
PERMANENT_REASONS: Final = frozenset(
    {
        REASON_NOT_FOUND,
        REASON_ACCESS_DENIED,
        REASON_DIGEST_MISMATCH,
        REASON_UNSUPPORTED,
        REASON_INVALID_URI,
        REASON_INVALID_ARGUMENT,
    }
)
TERMINATION_LOG: Final = "/dev/termination-log"


class PullFailure(NamedTuple):
    reason: str
    message: str

    @property
    def permanent(self) -> bool:
        return self.reason in PERMANENT_REASONS


def format_termination_message(reason: str, message: str) -> str:
    """One line, as the kubelet shows it in the container's terminated state."""
    one_line = " ".join(message.split())
    return f"{reason}: {one_line}"


def parse_termination_message(text: str) -> PullFailure:
    """Inverse of :func:`format_termination_message`; unknown text is a transient failure."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    reason, sep, message = line.partition(": ")
    if sep and reason.isidentifier():
        return PullFailure(reason, message)
    return PullFailure(REASON_TRANSIENT, line)


class Pulled(NamedTuple):
    """What a successful pull reports: the URI, the verified digest and the bytes fetched."""

    uri: str
    digest: str
    bytes: int


_PULLED: Final = re.compile(
    rf"{REASON_PULLED}: (?P<uri>\S.*) (?P<digest>sha256:[0-9a-f]{{64}}) \((?P<bytes>\d+) bytes\)"
)


def format_pulled_message(pulled: Pulled) -> str:
    """The termination message of a successful pull: "Pulled: <uri> <sha256:...> (<N> bytes)"."""
    return format_termination_message(REASON_PULLED, f"{pulled.uri} {pulled.digest} ({pulled.bytes} bytes)")


def parse_pulled_message(text: str) -> Pulled | None:
    """Inverse of :func:`format_pulled_message`; None for any other text (a failure, a truncated line)."""
    match = _PULLED.fullmatch(text.strip())
    if match is None:
        return None
    return Pulled(match["uri"], match["digest"], int(match["bytes"]))


# Prometheus metric names the operator's autoscaling triggers query.
METRIC_REQUESTS_TOTAL: Final = "modelplane_requests_total"  # labels: model, protocol, code
METRIC_REQUEST_SECONDS: Final = "modelplane_request_duration_seconds"
METRIC_IN_FLIGHT: Final = "modelplane_requests_in_flight"  # label: model
METRIC_BATCH_SIZE: Final = "modelplane_batch_size"  # label: model
METRIC_QUEUE_WAIT_SECONDS: Final = "modelplane_queue_wait_seconds"  # label: model
#: Model calls held open (at most the batch window) to take requests still arriving.
METRIC_BATCH_FILL_WAITS_TOTAL: Final = "modelplane_batch_fill_waits_total"  # label: model
METRIC_MODEL_LOAD_SECONDS: Final = "modelplane_model_load_seconds"  # label: model
METRIC_PULL_SECONDS: Final = "modelplane_pull_duration_seconds"  # label: model
METRIC_PULL_BYTES: Final = "modelplane_pull_bytes"  # label: model

# Language models: vLLM's own metric names (label model_name), so its dashboards and KEDA recipes
# work on either engine; and ours for what vLLM does not count.
METRIC_LLM_RUNNING: Final = "vllm:num_requests_running"
METRIC_LLM_WAITING: Final = "vllm:num_requests_waiting"
METRIC_LLM_KV_USAGE: Final = "vllm:kv_cache_usage_perc"  # 0 to 1
METRIC_LLM_PROMPT_TOKENS: Final = "vllm:prompt_tokens_total"
METRIC_LLM_GENERATION_TOKENS: Final = "vllm:generation_tokens_total"
METRIC_LLM_TTFT_SECONDS: Final = "vllm:time_to_first_token_seconds"
METRIC_LLM_ITL_SECONDS: Final = "vllm:inter_token_latency_seconds"
METRIC_LLM_E2E_SECONDS: Final = "vllm:e2e_request_latency_seconds"
METRIC_LLM_PREFIX_CACHE_QUERIES: Final = "vllm:prefix_cache_queries_total"  # prompt tokens looked up
METRIC_LLM_PREFIX_CACHE_HITS: Final = "vllm:prefix_cache_hits_total"  # of those, found in the cache
METRIC_LLM_STEP_SEQUENCES: Final = "modelplane_llm_decode_step_sequences"  # label model_name

# Consumers (spec.access): the gateway checks a consumer's API key and forwards its client id,
# "<consumer>.<key id>" (two key ids per consumer, so a key can be rotated without downtime), in this
# request header, which it sets itself (a client's own value never passes).
CONSUMER_HEADER: Final = "x-modelplane-client-id"
CONSUMER_KEY_IDS: Final = ("1", "2")
#: "false" on a shadow track: its copies of live requests are never billed to a consumer.
ENV_USAGE: Final = "MODELPLANE_USAGE"
# Usage per consumer (label consumer: the consumer's name, never a key or a key id), on live tracks.
METRIC_CONSUMER_REQUESTS_TOTAL: Final = "modelplane_consumer_requests_total"  # model, consumer, code
METRIC_CONSUMER_TOKENS_TOTAL: Final = "modelplane_consumer_tokens_total"  # model, consumer, kind


def client_ids(consumer: str) -> tuple[str, ...]:
    """The client ids a consumer's Secret may hold keys under: "<consumer>.1" and "<consumer>.2"."""
    return tuple(f"{consumer}.{key_id}" for key_id in CONSUMER_KEY_IDS)


def consumer_of(client_id: str) -> str | None:
    """The consumer of a client id the gateway forwarded; None for anything of another shape."""
    consumer, dot, key_id = client_id.rpartition(".")
    if not dot or key_id not in CONSUMER_KEY_IDS or not 0 < len(consumer) <= 63:
        return None
    if not consumer[0].isalnum() or not consumer[-1].isalnum():
        return None
    if not all(c.islower() or c.isdigit() or c == "-" for c in consumer) or not consumer.isascii():
        return None
    return consumer
