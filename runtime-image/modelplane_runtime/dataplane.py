"""The protocol-neutral data plane: health, metadata and inference. The only caller of a model."""

from __future__ import annotations

from typing import Any

from modelplane_runtime import __version__
from modelplane_runtime.batching import Batcher, BatchingConfig, BatchObserver
from modelplane_runtime.codecs import InferRequest
from modelplane_runtime.errors import ModelNotFound, ModelNotReady
from modelplane_runtime.formats.base import Arrays, Model, TensorSpec

SERVER_NAME = "modelplane-runtime"


class DataPlane:
    """One model per server. ``model`` is None while it loads (the loading responder's state)."""

    def __init__(
        self,
        name: str,
        model: Model | None,
        batching: BatchingConfig | None = None,
        observe_batch: BatchObserver | None = None,
    ) -> None:
        self.name = name
        self._model = model
        self._batcher = (
            Batcher(model.predict, batching or BatchingConfig(), observe_batch, model.call_seconds)
            if model is not None
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
        return self._model is not None and self._model.ready

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

    async def infer(self, request: InferRequest) -> tuple[Arrays, tuple[str, ...]]:
        """Outputs of the model for a request already decoded against :attr:`signature`."""
        assert self._batcher is not None
        names = request.outputs or self.default_outputs
        return await self._batcher.submit(request.inputs, names), names

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()
