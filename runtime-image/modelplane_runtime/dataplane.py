"""The protocol-neutral data plane: health, metadata and inference. The only caller of a model.

Every inference request, whatever protocol brought it, goes through one :class:`Call`: the model
looked up by name, the request counted in flight, bounded by the request timeout, and recorded in
the metrics with its outcome. The protocol fronts (REST, gRPC, OpenAI) only translate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, TypeVar

import modelplane_contract as contract

from modelplane_runtime import __version__
from modelplane_runtime.batching import Batcher, BatchingConfig
from modelplane_runtime.codecs import InferRequest
from modelplane_runtime.errors import ModelNotFound, ModelNotReady, RequestTimeout, RuntimeFailure
from modelplane_runtime.formats.base import Arrays, LanguageModel, Model, TensorSpec
from modelplane_runtime.metrics import Metrics, exposition

SERVER_NAME = "modelplane-runtime"
#: The code recorded for a request whose task was cancelled (its client went away mid-call).
CANCELLED_CODE = 499
Chunk = TypeVar("Chunk")


class DataPlane:
    """One model per server. ``model`` is None while it loads (the loading responder's state)."""

    def __init__(
        self,
        name: str,
        model: Model | None,
        batching: BatchingConfig | None = None,
        metrics: Metrics | None = None,
        request_timeout: float = 60.0,
        usage: bool = True,
    ) -> None:
        self.name = name
        self.metrics = metrics
        self.request_timeout = request_timeout
        #: Count each request against the consumer the gateway named (False on a shadow track).
        self.usage = usage
        #: Set on SIGTERM: readiness fails and responses ask clients to reconnect (elsewhere).
        self.draining = False
        self._model = model
        # A language model's engine batches sequences itself.
        self.batcher = (
            Batcher(
                model.predict,
                batching or BatchingConfig(),
                metrics.observe_batch if metrics is not None else None,
                model.call_seconds,
            )
            if model is not None and not isinstance(model, LanguageModel)
            else None
        )
        if model is not None:
            self.signature: list[TensorSpec] = model.inputs
            self.output_names: tuple[str, ...] = tuple(spec.name for spec in model.outputs)
            self.default_outputs: tuple[str, ...] = model.default_outputs
        else:
            self.signature, self.output_names, self.default_outputs = [], (), ()

    @staticmethod
    def live() -> bool:
        return True  # answering at all is liveness; it never depends on the model

    def ready(self) -> bool:
        return not self.draining and self._model is not None and self._model.ready

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": []}

    def model(self, name: str) -> Model:
        """The served model if ``name`` is its name and it is ready; the errors say which is not."""
        if name != self.name:
            raise ModelNotFound(f"model {name!r:.80} is not served here; this server serves {self.name!r}")
        if self._model is None or not self._model.ready:
            raise ModelNotReady(f"model {self.name!r} is not ready yet (loading or warming up)")
        return self._model

    def model_ready(self, name: str) -> bool:
        if name != self.name:
            raise ModelNotFound(f"model {name!r:.80} is not served here; this server serves {self.name!r}")
        return self.ready()

    def model_metadata(self, name: str) -> dict[str, Any]:
        return self.model(name).metadata()

    def call(self, protocol: str, name: str, client_id: str | None = None) -> Call:
        """The policy of one inference request for model ``name``: ``with dataplane.call(...) as call``.
        ``client_id``: the gateway-set contract.CONSUMER_HEADER, if the request has one."""
        return Call(self, protocol, name, client_id)

    def metrics_text(self) -> tuple[bytes, str]:
        """The Prometheus exposition (every worker's values) and its content type."""
        if self.metrics is not None:
            self.metrics.flush()
        return exposition()

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()


class Call:
    """One inference request, the same for every protocol.

    Entering looks the model up (a :class:`ModelNotFound` or :class:`ModelNotReady` is raised, and
    recorded); from then until the block ends the request is counted in flight. :meth:`infer` and
    :meth:`stream` run under the request timeout, counted from entry. On exit the outcome is
    recorded: 200, or the ``status`` of the :class:`RuntimeFailure` that ended the block. A front
    writes its answer inside the block (so the latency includes it), its error answer outside.
    """

    __slots__ = ("_dataplane", "_name", "_protocol", "_started", "consumer", "model")

    def __init__(self, dataplane: DataPlane, protocol: str, name: str, client_id: str | None = None) -> None:
        self._dataplane = dataplane
        self._protocol = protocol
        self._name = name
        #: The consumer the request is counted against (its usage), if any.
        self.consumer = (
            contract.consumer_of(client_id)
            if client_id and dataplane.usage and dataplane.metrics is not None
            else None
        )

    def __enter__(self) -> Call:
        self._started = time.perf_counter()
        metrics = self._dataplane.metrics
        if metrics is not None:
            metrics.in_flight_now += 1
        try:
            self.model = self._dataplane.model(self._name)
        except RuntimeFailure as error:
            self._finish(error.status)
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if error is None:
            self._finish(200)
        elif isinstance(error, RuntimeFailure):
            self._finish(error.status)
        elif isinstance(error, asyncio.CancelledError):
            self._finish(CANCELLED_CODE)
        else:
            self._finish(500)

    def _finish(self, code: int) -> None:
        metrics = self._dataplane.metrics
        if metrics is not None:
            metrics.in_flight_now -= 1
            metrics.observe_request(self._protocol, code, time.perf_counter() - self._started)
            if self.consumer is not None:
                metrics.observe_consumer(self.consumer, code)

    def count_tokens(self, prompt: int, completion: int) -> None:
        """A language model's tokens of this request, counted against its consumer (if any)."""
        metrics = self._dataplane.metrics
        if self.consumer is not None and metrics is not None:
            metrics.observe_consumer_tokens(self.consumer, prompt, completion)

    def _remaining(self) -> float:
        return self._dataplane.request_timeout - (time.perf_counter() - self._started)

    def _timed_out(self) -> RequestTimeout:
        return RequestTimeout(f"inference took longer than {self._dataplane.request_timeout:g} s")

    async def infer(self, request: InferRequest) -> tuple[Arrays, tuple[str, ...]]:
        """The model's outputs (and their names) for a request decoded against the signature."""
        dataplane = self._dataplane
        assert dataplane.batcher is not None  # entering found the model, so there is one
        names = request.outputs or dataplane.default_outputs
        try:
            async with asyncio.timeout(self._remaining()):
                return await dataplane.batcher.submit(request.inputs, names), names
        except TimeoutError:
            raise self._timed_out() from None

    async def stream(self, chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
        """``chunks`` passed through, the whole stream within the request timeout.

        Each wait for the next chunk runs under what is left of the timeout (not a timeout around
        the consumer's loop, which would cancel it while it writes, outside this generator).
        """
        while True:
            try:
                async with asyncio.timeout(self._remaining()):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise self._timed_out() from None
            yield chunk
