"""The process model of ``serve``.

1. Bind the HTTP socket, then fork a *loading responder* that answers on it at once: liveness
   200, readiness 503, inference 503. Liveness never waits for the model.
2. Load the model once, in the parent, and warm it up with an input built from its signature
   (or the sample request shipped beside it). Readiness stays false until both succeed.
3. Freeze the heap and fork N workers that share the listening socket (HTTP) and bind the gRPC
   port with SO_REUSEPORT. The model's memory is shared copy-on-write between them.
4. Supervise: restart a worker that dies; on SIGTERM, forward it to the workers, which drain:
   for ``drain_seconds`` they keep serving with readiness failing and every answer closing its
   connection (so the Service's endpoints drop this pod and kept-alive clients reconnect to
   another before anything is refused), then stop accepting and finish in-flight requests; what
   is left when the grace period ends is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import modelplane_contract as contract
import numpy as np

from modelplane_runtime import codecs
from modelplane_runtime.batching import BatchingConfig
from modelplane_runtime.errors import InvalidInput, ModelLoadError
from modelplane_runtime.formats import LoadOptions, Model, load_model
from modelplane_runtime.formats.base import Arrays, LanguageModel, read_pull_record, resolve_trust
from modelplane_runtime.llm.llamacpp import EngineConfig

log = logging.getLogger("modelplane.runtime")

EXIT_LOAD_FAILED = 1
EXIT_WORKERS_FAILING = 3
#: A worker that dies sooner than this after it started is failing, not crashing once.
WORKER_MIN_LIFETIME_SECONDS = 2.0
_SUPERVISOR_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}


@dataclass(frozen=True)
class ServeConfig:
    model_dir: Path
    format: str
    name: str
    host: str = "0.0.0.0"
    http_port: int = contract.HTTP_PORT
    grpc_port: int = contract.GRPC_PORT
    protocols: frozenset[str] = frozenset(
        {contract.PROTOCOL_V1, contract.PROTOCOL_V2, contract.PROTOCOL_GRPC}
    )
    workers: int = 1
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    request_timeout: float = 60.0
    max_body_bytes: int = 16 * 1024 * 1024
    digest: str | None = None
    allow_pickle: bool = False
    custom_class: str | None = None
    signature: str | None = None
    shutdown_grace: float = 25.0
    drain_seconds: float = 0.0
    usage: bool = True  # per-consumer usage counters (off on a shadow track)
    llm: EngineConfig | None = None


def available_cpus() -> int:
    """CPUs this process may use: its affinity, capped by the cgroup's CPU quota when there is one."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def load(config: ServeConfig) -> Model:
    """Load and warm up the model; raises :class:`ModelLoadError` with the reason."""
    trust = resolve_trust(config.model_dir, config.digest, config.allow_pickle)
    options = LoadOptions(
        model_dir=config.model_dir,
        name=config.name,
        trust=trust,
        custom_class=config.custom_class,
        signature=config.signature,
        threads=1,
        llm=config.llm,
    )
    model = load_model(config.format, options)
    if isinstance(model, LanguageModel):
        model.warm_up()  # a real generation: readiness means tokens come out
    else:
        warm_up(model)
    model.mark_ready()
    return model


def warm_up(model: Model) -> bool:
    """One inference before readiness; False when no input could be made (logged)."""
    sample = model.options.model_dir / contract.WARMUP_REQUEST_FILE
    output_names = [spec.name for spec in model.outputs]
    inputs: Arrays
    outputs = model.default_outputs
    if sample.is_file():
        try:
            request = codecs.decode_v2(sample.read_bytes(), model.inputs, output_names)
        except InvalidInput as error:
            raise ModelLoadError(
                f"the warm-up request {sample.name} does not fit the model: {error}"
            ) from error
        inputs, outputs = request.inputs, request.outputs or outputs
    else:
        built = model.example_inputs() or _input_from_signature(model)
        if built is None:
            log.warning(
                "model %s: its signature leaves dimensions open, so no warm-up input can be built; "
                "ship %s beside the model to warm it up before readiness",
                model.options.name,
                contract.WARMUP_REQUEST_FILE,
            )
            return False
        inputs = built
    started = time.perf_counter()
    try:
        result = model.predict(inputs, outputs)
        model.call_seconds = time.perf_counter() - started
    except Exception as error:
        raise ModelLoadError(f"the warm-up inference failed: {error!r}") from error
    missing = [name for name in outputs if name not in result]
    if missing:
        raise ModelLoadError(f"the warm-up inference did not return the outputs {missing}")
    return True


def _input_from_signature(model: Model) -> Arrays | None:
    from modelplane_runtime.datatypes import NUMPY_BY_DATATYPE

    inputs: Arrays = {}
    for spec in model.inputs:
        rest = spec.shape[1:]
        if any(dim < 0 for dim in rest):
            return None
        shape = (1, *rest)
        if spec.datatype == "BYTES":
            array = np.empty(shape, dtype=object)
            array.fill(b"warm-up")
        else:
            array = np.zeros(shape, dtype=NUMPY_BY_DATATYPE[spec.datatype])
        inputs[spec.name] = array
    return inputs


def bind_http(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:
    """Have the kernel send SIGTERM to this child when the supervisor dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _fork(target: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SUPERVISOR_SIGNALS)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _die_with_parent()
            target()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:
            log.exception("worker %d failed", os.getpid())
            code = 1
        finally:
            logging.shutdown()
            os._exit(code)
    return pid


def _run_worker(sock: socket.socket, config: ServeConfig, model: Model | None, metrics: Any) -> None:
    """One worker process: uvicorn on the shared socket and (with a model) gRPC, on one loop."""
    import asyncio

    import uvicorn
    import uvloop

    from modelplane_runtime import metrics as metrics_module
    from modelplane_runtime import rest
    from modelplane_runtime.dataplane import DataPlane
    from modelplane_runtime.rest import RestApp

    async def main() -> None:
        dataplane = DataPlane(
            config.name, model, config.batching, metrics, config.request_timeout, usage=config.usage
        )
        routes: tuple[rest.Route, ...] = rest.ROUTES
        if contract.PROTOCOL_OPENAI in config.protocols:
            from modelplane_runtime import openai

            routes = (*rest.ROUTES, *openai.ROUTES)
        app = RestApp(dataplane, config.protocols, config.max_body_bytes, routes)
        grpc_server = None
        if model is not None and contract.PROTOCOL_GRPC in config.protocols:
            from modelplane_runtime.grpc.service import make_server

            grpc_server = make_server(dataplane, config.grpc_port)
            await grpc_server.start()
        loop = asyncio.get_running_loop()
        stopping: list[asyncio.Task[None]] = []

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                # Called in the signal handler. The first signal drains; the end of the drain (or a
                # second signal) stops accepting.
                if dataplane.draining or config.drain_seconds <= 0:
                    self.stop_accepting(sig, frame)
                    return
                dataplane.draining = True
                drain = config.drain_seconds
                loop.call_soon_threadsafe(loop.call_later, drain, self.stop_accepting, sig, frame)

            def stop_accepting(self, sig: int, frame: Any) -> None:
                super().handle_exit(sig, frame)
                if grpc_server is not None and not stopping:
                    # Stop taking gRPC calls now too (GOAWAY); in-flight ones get the grace period.
                    stopping.append(loop.create_task(grpc_server.stop(config.shutdown_grace)))

        uv_config = uvicorn.Config(
            app,
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=max(1, int(config.shutdown_grace)),
            timeout_keep_alive=30,
            server_header=False,
            proxy_headers=False,
            date_header=False,
        )
        server = Server(uv_config)
        flusher = None
        if metrics is not None:

            def flush() -> None:
                nonlocal flusher
                metrics.flush()
                flusher = loop.call_later(metrics_module.FLUSH_SECONDS, flush)

            flusher = loop.call_later(metrics_module.FLUSH_SECONDS, flush)
        await server.serve(sockets=[sock])
        if stopping:
            await stopping[0]
        elif grpc_server is not None:
            await grpc_server.stop(config.shutdown_grace)
        dataplane.close()
        if metrics is not None:
            if flusher is not None:
                flusher.cancel()
            metrics.flush()

    # uvicorn re-raises the signal it caught once it has shut down; a no-op handler absorbs it.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    uvloop.run(main())


def serve(config: ServeConfig) -> int:
    from modelplane_runtime import metrics as metrics_module

    metrics_dir = metrics_module.use_directory(contract.TMP_DIR if Path(contract.TMP_DIR).is_dir() else None)
    try:
        return _serve(config, metrics_module)
    finally:
        metrics_module.remove_directory(metrics_dir)


def _serve(config: ServeConfig, metrics_module: Any) -> int:
    sock = bind_http(config.host, config.http_port)
    signal.pthread_sigmask(signal.SIG_BLOCK, _SUPERVISOR_SIGNALS)
    responder = _fork(lambda: _run_worker(sock, config, None, None))
    log.info("listening on %s:%d while model %s loads", config.host, config.http_port, config.name)
    started = time.perf_counter()
    try:
        model = load(config)
    except ModelLoadError as error:
        _stop(responder)
        message = contract.format_termination_message("ModelLoadFailed", str(error))
        print(message, file=sys.stderr)  # noqa: T201 - the one line a user reads in the container's log
        _write_termination_log(message)
        return EXIT_LOAD_FAILED
    load_seconds = time.perf_counter() - started
    if signal.SIGTERM in signal.sigpending() or signal.SIGINT in signal.sigpending():
        _stop(responder)
        return 0
    metrics = metrics_module.Metrics(config.name)
    metrics.record_load(load_seconds, read_pull_record(config.model_dir))
    log.info("model %s (%s) loaded and warmed up in %.2f s", config.name, config.format, load_seconds)
    if contract.PROTOCOL_GRPC in config.protocols:
        import modelplane_runtime.grpc.service  # noqa: F401  (imported once here, shared by the workers)
    if not model.fork_safe:
        return _serve_in_process(sock, config, model, metrics, metrics_module, responder)
    gc.collect()
    gc.freeze()  # the collector would otherwise touch, and so copy, every shared object in each worker
    _stop(responder)
    workers: dict[int, float] = {}
    for _ in range(config.workers):
        workers[_fork(lambda: _run_worker(sock, config, model, metrics))] = time.monotonic()
    log.info(
        "serving %s with %d worker(s): http %d, grpc %d",
        config.name,
        config.workers,
        config.http_port,
        config.grpc_port,
    )
    try:
        return _supervise(
            workers,
            lambda: _fork(lambda: _run_worker(sock, config, model, metrics)),
            sock.close,
            config,
            metrics_module,
        )
    finally:
        sock.close()


def _serve_in_process(
    sock: socket.socket,
    config: ServeConfig,
    model: Model,
    metrics: Any,
    metrics_module: Any,
    responder: int,
) -> int:
    """A model that cannot cross a fork serves from the process that loaded it. A language model's
    engine threads and KV cache would not survive one (and one engine batching every request is the
    point); neither would TensorFlow's thread pools."""
    if isinstance(model, LanguageModel):
        model.scheduler.observer = metrics_module.LLMMetrics(config.name)
    _stop(responder)
    if config.workers > 1:
        log.warning(
            "%s models cannot be forked into workers: serving with one; scale with replicas",
            model.format_name,
        )
    log.info("serving %s in one process: http %d", config.name, config.http_port)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SUPERVISOR_SIGNALS)
    try:
        _run_worker(sock, config, model, metrics)
    finally:
        if isinstance(model, LanguageModel):
            model.close()
        sock.close()
    return 0


def _supervise(
    workers: dict[int, float],
    start_worker: Callable[[], int],
    close_listener: Callable[[], None],
    config: ServeConfig,
    metrics_module: Any,
) -> int:
    while True:
        info = signal.sigwaitinfo(_SUPERVISOR_SIGNALS)
        if info.si_signo in (signal.SIGTERM, signal.SIGINT):
            log.info("signal %d: draining %d worker(s)", info.si_signo, len(workers))
            # Our copy of the listening socket would keep taking connections that no worker accepts.
            close_listener()
            return _shutdown(workers, config.shutdown_grace, metrics_module, config.drain_seconds)
        for pid, status in _reap():
            metrics_module.process_exited(pid)
            started = workers.pop(pid, None)
            if started is None:
                continue
            log.warning("worker %d exited (status %d)", pid, status)
            if time.monotonic() - started < WORKER_MIN_LIFETIME_SECONDS:
                log.error("worker %d died right after starting; stopping the server", pid)
                _shutdown(workers, config.shutdown_grace, metrics_module)
                return EXIT_WORKERS_FAILING
            workers[start_worker()] = time.monotonic()


def _reap() -> list[tuple[int, int]]:
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, os.waitstatus_to_exitcode(status)))


def _shutdown(workers: dict[int, float], grace: float, metrics_module: Any, drain: float = 0.0) -> int:
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + drain + grace
    while workers and time.monotonic() < deadline:
        signal.sigtimedwait({signal.SIGCHLD}, min(0.5, max(0.01, deadline - time.monotonic())))
        for pid, _status in _reap():
            workers.pop(pid, None)
            metrics_module.process_exited(pid)
    for pid in workers:
        log.warning("worker %d did not finish within %.0f s; killing it", pid, drain + grace)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in list(workers):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return 0


def _stop(pid: int) -> None:
    """Stop the loading responder; connections waiting meanwhile stay in the socket's backlog."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _write_termination_log(message: str) -> None:
    with contextlib.suppress(OSError):
        log_path = Path(contract.TERMINATION_LOG)
        if log_path.exists():
            log_path.write_text(message)
