"""A transformers pipeline from a local directory (never a hub); needs the ``huggingface`` extra.

Input: one BYTES tensor of texts. Output: one BYTES tensor whose items are the pipeline's
result for each text, JSON-encoded.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.formats.base import Arrays, Model, TensorSpec

# Architecture name suffix -> pipeline task. Without a task, transformers asks the hub, which a
# pod never reaches; the saved config names the head, which decides the task.
TASKS_BY_HEAD = (
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForMaskedLM", "fill-mask"),
    ("ForCausalLM", "text-generation"),
    ("ForConditionalGeneration", "text2text-generation"),
    ("ForSeq2SeqLM", "text2text-generation"),
    ("Model", "feature-extraction"),
)


def task_from_config(config_path: Path) -> str:
    architectures = orjson.loads(config_path.read_bytes()).get("architectures") or []
    for architecture in architectures:
        for suffix, task in TASKS_BY_HEAD:
            if str(architecture).endswith(suffix):
                return task
    raise ModelLoadError(
        f"cannot tell the pipeline task from architectures {architectures} in {config_path}: "
        "save a model with a task head (for example BertForSequenceClassification) with save_pretrained"
    )


class HuggingFaceModel(Model):
    format_name = "huggingface"

    def load(self) -> None:
        try:
            # Typed as Any: the extra is optional, and its stubs are there only where it is installed.
            transformers: Any = importlib.import_module("transformers")
        except ImportError as error:
            raise ModelLoadError(
                "format huggingface needs transformers and torch: install modelplane-runtime[huggingface]"
            ) from error
        model_dir = self.options.model_dir
        if not (model_dir / "config.json").is_file():
            raise ModelLoadError(f"{model_dir} has no config.json: save the model with save_pretrained")
        task = task_from_config(model_dir / "config.json")
        try:
            self._pipeline = transformers.pipeline(task=task, model=str(model_dir), device="cpu")
        except Exception as error:
            raise ModelLoadError(f"cannot build a transformers pipeline from {model_dir}: {error}") from error
        self._inputs = [TensorSpec("text", "BYTES", (-1,))]
        self._outputs = [TensorSpec("predict", "BYTES", (-1,))]

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        texts = [
            item.decode() if isinstance(item, bytes) else str(item)
            for item in next(iter(inputs.values())).ravel()
        ]
        results = self._pipeline(texts)
        encoded = np.empty(len(results), dtype=object)
        encoded[:] = [orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY).decode() for result in results]
        return {"predict": encoded}
