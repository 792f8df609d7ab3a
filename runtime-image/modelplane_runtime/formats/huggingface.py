"""A transformers pipeline from a local directory (never a hub); needs the ``huggingface`` extra.

Input: one BYTES tensor of texts. Output: one BYTES tensor whose items are the pipeline's
result for each text, JSON-encoded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.formats.base import Arrays, Model, TensorSpec


class HuggingFaceModel(Model):
    format_name = "huggingface"

    def load(self) -> None:
        try:
            import transformers
        except ImportError as error:
            raise ModelLoadError(
                "format huggingface needs transformers and torch: install modelplane-runtime[huggingface]"
            ) from error
        model_dir = self.options.model_dir
        if not (model_dir / "config.json").is_file():
            raise ModelLoadError(f"{model_dir} has no config.json: save the model with save_pretrained")
        task = self.options.extra.get("task") or None
        try:
            self._pipeline = transformers.pipeline(task=task, model=str(model_dir), device="cpu")
        except Exception as error:
            raise ModelLoadError(f"cannot build a transformers pipeline from {model_dir}: {error}") from error
        self._inputs = [TensorSpec("text", "BYTES", (-1,))]
        self._outputs = [TensorSpec("predict", "BYTES", (-1,))]

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._outputs

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        texts = [
            item.decode() if isinstance(item, bytes) else str(item)
            for item in next(iter(inputs.values())).ravel()
        ]
        results = self._pipeline(texts)
        encoded = np.empty(len(results), dtype=object)
        encoded[:] = [orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY).decode() for result in results]
        return {"predict": encoded}
