"""A model served through its optimized ONNX form, with the original's signature.

``optimize`` converted the original and checked the result against it; its record names the
original's inputs and outputs and which graph output answers for each, so clients see the same
names, datatypes and shapes as from the original (features cast to the graph's float32 on the way
in, a regressor's (N, 1) column back to (N,) on the way out).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import modelplane_contract as contract
import numpy as np

from modelplane_runtime.datatypes import NUMPY_BY_DATATYPE
from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.formats.base import Arrays, LoadOptions, Model, TensorSpec

_NUMPY_BY_ONNX_TYPE = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


class OptimizedModel(Model):
    def __init__(
        self,
        options: LoadOptions,
        graph: bytes,
        format_name: str,
        inputs: Sequence[TensorSpec],
        outputs: Mapping[TensorSpec, str],
        digests: tuple[str, str] | None = None,
        default_outputs: Sequence[str] = (),
    ) -> None:
        super().__init__(options)
        self._digests = digests  # (optimized, original), shown in metadata
        self.format_name = format_name
        self._graph = graph
        self._inputs = list(inputs)
        self._graph_outputs = {spec.name: graph_name for spec, graph_name in outputs.items()}
        self._outputs = list(outputs)
        # What a request naming no output gets: the original's choice (every output of a TensorFlow
        # or ONNX model), else the first output.
        served = [name for name in default_outputs if name in self._graph_outputs]
        self._default_outputs = tuple(served) or (self._outputs[0].name,)

    def load(self) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # Made before workers fork: no thread pools of its own (as formats/onnx.py).
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            session = onnxruntime.InferenceSession(self._graph, options, providers=["CPUExecutionProvider"])
        except Exception as error:
            raise ModelLoadError(f"cannot load the optimized ONNX model: {error}") from error
        graph_inputs = session.get_inputs()
        if len(graph_inputs) != len(self._inputs):
            raise ModelLoadError(
                f"the optimized model takes {len(graph_inputs)} inputs, the original {len(self._inputs)}"
            )
        # Positional: a converter may rename an input (skl2onnx turns '-' into '_').
        self._feeds = [
            (spec.name, node.name, _NUMPY_BY_ONNX_TYPE.get(node.type))
            for spec, node in zip(self._inputs, graph_inputs, strict=True)
        ]
        self._session = session
        self.engine = f"onnxruntime {onnxruntime.__version__}"

    @property
    def default_outputs(self) -> tuple[str, ...]:
        return self._default_outputs

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        feed = {
            graph_name: inputs[name] if dtype is None else inputs[name].astype(dtype, copy=False)
            for name, graph_name, dtype in self._feeds
        }
        results = self._session.run([self._graph_outputs[name] for name in outputs], feed)
        answer: Arrays = {}
        for name, value in zip(outputs, results, strict=True):
            array = np.asarray(value)
            spec = next(spec for spec in self._outputs if spec.name == name)
            if len(spec.shape) == 1 and array.ndim == 2 and array.shape[1] == 1:
                array = array[:, 0]
            wanted = NUMPY_BY_DATATYPE.get(spec.datatype)
            if wanted is not None and spec.datatype != "BYTES" and array.dtype != wanted:
                array = array.astype(wanted)
            answer[name] = array
        return answer

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        if self._digests is not None:
            optimized, original = self._digests
            meta.setdefault("parameters", {}).update({"digest": optimized, "originalDigest": original})
        return meta


def read_record(model_dir: Path) -> dict[str, Any] | None:
    path = model_dir / contract.OPTIMIZED_DIR / contract.OPTIMIZED_RECORD_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot read the optimize record {path}: {error}") from error
    return record if isinstance(record, dict) else None


def served_model(options: LoadOptions, record: dict[str, Any]) -> Model | None:
    """The optimized model `serve` loads when the record says it passed the gate, else None."""
    if not record.get("serve"):
        return None
    graph = (options.model_dir / contract.OPTIMIZED_DIR / contract.OPTIMIZED_MODEL_FILE).read_bytes()
    status = record["status"]
    model = OptimizedModel(
        options,
        graph,
        record["format"],
        [TensorSpec(item["name"], item["datatype"], tuple(item["shape"])) for item in record["inputs"]],
        {
            TensorSpec(item["served"], item["datatype"], tuple(item["shape"])): item["graph"]
            for item in record["outputs"]
        },
        digests=(status["optimized"]["digest"], status["original"]["digest"]),
        default_outputs=record.get("defaultOutputs", ()),
    )
    model.load()
    return model
