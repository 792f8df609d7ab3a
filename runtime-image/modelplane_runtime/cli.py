"""``modelplane-runtime pull ...`` and ``modelplane-runtime serve ...``.

Every serve flag defaults to an environment variable named in :mod:`modelplane_contract`,
so the operator may set either.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import modelplane_contract as contract

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# Native thread pools must not start before workers fork, and each worker owns one core.
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {number}")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {number}")
    return number


def serve_parser() -> argparse.ArgumentParser:
    """Flags default to their environment variables (given as strings: argparse checks them too)."""
    parser = argparse.ArgumentParser(
        prog=f"{contract.RUNTIME_COMMAND} {contract.SERVE_SUBCOMMAND}",
        description="Load one model and serve it over KServe v1, OIP v2 REST and OIP v2 gRPC.",
    )
    add = parser.add_argument
    add(
        "--model-dir",
        default=_env(contract.ENV_MODEL_DIR, contract.MODEL_DIR),
        help=f"env {contract.ENV_MODEL_DIR}",
    )
    add(
        "--format",
        default=_env(contract.ENV_MODEL_FORMAT),
        choices=contract.FORMATS,
        help=f"env {contract.ENV_MODEL_FORMAT}",
    )
    add("--name", default=_env(contract.ENV_MODEL_NAME, "model"), help=f"env {contract.ENV_MODEL_NAME}")
    add("--host", default="0.0.0.0", help="address to listen on")
    add(
        "--http-port",
        type=int,
        default=_env(contract.ENV_HTTP_PORT, str(contract.HTTP_PORT)),
        help=f"env {contract.ENV_HTTP_PORT}",
    )
    add(
        "--grpc-port",
        type=int,
        default=_env(contract.ENV_GRPC_PORT, str(contract.GRPC_PORT)),
        help=f"env {contract.ENV_GRPC_PORT}",
    )
    add(
        "--protocols",
        default=_env(contract.ENV_PROTOCOLS),
        help=f"comma list of v1, v2, grpc, openai; default v1,v2,grpc, or openai for a language model "
        f"(env {contract.ENV_PROTOCOLS})",
    )
    add(
        "--workers",
        type=_positive_int,
        default=_env(contract.ENV_WORKERS),
        help=f"worker processes; default: the CPUs given (env {contract.ENV_WORKERS})",
    )
    add(
        "--batching",
        type=_flag,
        default=_env(contract.ENV_BATCHING, "true"),
        help=f"env {contract.ENV_BATCHING}",
    )
    add(
        "--max-batch-size",
        type=_positive_int,
        default=_env(contract.ENV_MAX_BATCH_SIZE, "64"),
        help=f"env {contract.ENV_MAX_BATCH_SIZE}",
    )
    add(
        "--max-latency-ms",
        type=float,
        default=_env(contract.ENV_MAX_LATENCY_MS, "5"),
        help=f"env {contract.ENV_MAX_LATENCY_MS}",
    )
    add(
        "--max-queue",
        type=_positive_int,
        default=_env(contract.ENV_MAX_QUEUE, "256"),
        help=f"env {contract.ENV_MAX_QUEUE}",
    )
    add(
        "--request-timeout-seconds",
        type=_positive_float,
        default=_env(contract.ENV_REQUEST_TIMEOUT_SECONDS, "60"),
        help=f"env {contract.ENV_REQUEST_TIMEOUT_SECONDS}",
    )
    add(
        "--max-body-bytes",
        type=_positive_int,
        default=_env(contract.ENV_MAX_BODY_BYTES, str(16 * 1024 * 1024)),
        help=f"env {contract.ENV_MAX_BODY_BYTES}",
    )
    add(
        "--digest",
        default=_env(contract.ENV_MODEL_DIGEST),
        help=f"the pinned sha256 digest (env {contract.ENV_MODEL_DIGEST})",
    )
    add(
        "--allow-pickle",
        type=_flag,
        default=_env(contract.ENV_ALLOW_PICKLE, "false"),
        help=f"env {contract.ENV_ALLOW_PICKLE}",
    )
    add(
        "--usage",
        type=_flag,
        default=_env(contract.ENV_USAGE, "true"),
        help="count requests (and tokens) per consumer from the gateway's client-id header; false on "
        f"a shadow track, whose copies of requests are never billed (env {contract.ENV_USAGE})",
    )
    add(
        "--custom-class",
        default=_env(contract.ENV_CUSTOM_CLASS),
        help=f"package.module:Class (env {contract.ENV_CUSTOM_CLASS})",
    )
    add(
        "--signature",
        default=_env(contract.ENV_MODEL_SIGNATURE),
        help=f"the SavedModel signature served, else serving_default (env {contract.ENV_MODEL_SIGNATURE})",
    )
    add(
        "--shutdown-grace-seconds",
        type=_positive_float,
        default=_env(contract.ENV_SHUTDOWN_GRACE_SECONDS, "25"),
        help=f"env {contract.ENV_SHUTDOWN_GRACE_SECONDS}",
    )
    add(
        "--drain-seconds",
        type=_non_negative_float,
        default=_env(contract.ENV_DRAIN_SECONDS, "0"),
        help="after SIGTERM, keep serving this long with readiness failing and connections closed "
        f"after each answer, before no longer accepting (env {contract.ENV_DRAIN_SECONDS})",
    )
    add(
        "--context-length",
        type=_positive_int,
        default=_env(contract.ENV_CONTEXT_LENGTH, "2048"),
        help=f"language models: the most tokens of one sequence, prompt and completion "
        f"(env {contract.ENV_CONTEXT_LENGTH})",
    )
    add(
        "--max-sequences",
        type=_positive_int,
        default=_env(contract.ENV_MAX_SEQUENCES, "4"),
        help=f"language models: sequences decoded together (env {contract.ENV_MAX_SEQUENCES})",
    )
    add(
        "--engine-threads",
        type=_positive_int,
        default=_env(contract.ENV_ENGINE_THREADS, "1"),
        help=f"language models: the engine's compute threads (env {contract.ENV_ENGINE_THREADS})",
    )
    return parser


def serve_main(argv: Sequence[str]) -> int:
    parser = serve_parser()
    args = parser.parse_args(argv)
    if not args.format:
        parser.error(
            f"--format (or {contract.ENV_MODEL_FORMAT}) is required: one of {', '.join(contract.FORMATS)}"
        )
    language_model = args.format in contract.LLM_FORMATS
    listed = args.protocols or (contract.PROTOCOL_OPENAI if language_model else "v1,v2,grpc")
    protocols = frozenset(item.strip() for item in listed.split(",") if item.strip())
    unknown = protocols - set(contract.PROTOCOLS)
    if unknown or not protocols:
        parser.error(f"--protocols must be a comma list of {', '.join(contract.PROTOCOLS)}; got {listed!r}")
    if language_model and protocols != {contract.PROTOCOL_OPENAI}:
        parser.error(f"format {args.format} serves only the openai protocol; got {listed!r}")
    if not language_model and contract.PROTOCOL_OPENAI in protocols:
        parser.error(
            f"the openai protocol needs a language model format ({', '.join(sorted(contract.LLM_FORMATS))})"
        )
    for name in _THREAD_ENV:
        os.environ.setdefault(name, "1")
    # Imported only now: numpy and friends read the thread settings above when they load.
    from modelplane_runtime.batching import BatchingConfig
    from modelplane_runtime.llm.llamacpp import EngineConfig
    from modelplane_runtime.server import ServeConfig, available_cpus, serve

    # A language model's engine batches sequences itself, in one process (see server.py).
    workers = 1 if language_model else args.workers or available_cpus()
    config = ServeConfig(
        model_dir=Path(args.model_dir),
        format=args.format,
        name=args.name,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        protocols=protocols,
        workers=workers,
        batching=BatchingConfig(
            enabled=args.batching,
            max_batch_size=args.max_batch_size,
            max_latency=args.max_latency_ms / 1000,
            max_queue=args.max_queue,
        ),
        request_timeout=args.request_timeout_seconds,
        max_body_bytes=args.max_body_bytes,
        digest=args.digest,
        allow_pickle=args.allow_pickle,
        custom_class=args.custom_class,
        signature=args.signature,
        shutdown_grace=args.shutdown_grace_seconds,
        drain_seconds=args.drain_seconds,
        usage=args.usage,
        llm=EngineConfig(
            context_length=args.context_length,
            max_sequences=args.max_sequences,
            threads=args.engine_threads,
            max_queue=args.max_queue,
        )
        if language_model
        else None,
    )
    return serve(config)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    commands = (contract.PULL_SUBCOMMAND, contract.SERVE_SUBCOMMAND)
    if not arguments or arguments[0] not in commands:
        print(
            f"usage: {contract.RUNTIME_COMMAND} {{{','.join(commands)}}} [options]  (--help after a command)",
            file=sys.stderr,
        )
        return contract.EXIT_USAGE
    command, rest = arguments[0], arguments[1:]
    if command == contract.PULL_SUBCOMMAND:
        from modelplane_runtime.pull import main as pull_main  # written beside storage/

        return pull_main(rest)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve_main(rest)


if __name__ == "__main__":
    sys.exit(main())
