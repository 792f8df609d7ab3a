"""ONNX models run by onnxruntime on CPU."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.formats.base import Arrays, Model, TensorSpec, find_artifact

_DATATYPE_BY_ONNX_TYPE = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def _spec(node: Any) -> TensorSpec | None:
    datatype = _DATATYPE_BY_ONNX_TYPE.get(node.type)
    if datatype is None:
        return None  # sequences and maps (e.g. ZipMap) are not tensors
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in node.shape)
    return TensorSpec(node.name, datatype, shape)


class OnnxModel(Model):
    format_name = "onnx"

    def load(self) -> None:
        import onnxruntime

        path = find_artifact(self.options.model_dir, (".onnx",), "ONNX model")
        options = onnxruntime.SessionOptions()
        # Sessions are made before workers fork, so they must not start thread pools of their own.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:
            raise ModelLoadError(f"cannot load the ONNX model {path.name}: {error}") from error
        inputs = [_spec(node) for node in session.get_inputs()]
        if any(spec is None for spec in inputs):
            raise ModelLoadError(
                f"{path.name} has inputs that are not tensors; only tensor inputs are served"
            )
        self._inputs = [spec for spec in inputs if spec is not None]
        self._outputs = [spec for spec in (_spec(node) for node in session.get_outputs()) if spec is not None]
        if not self._outputs:
            raise ModelLoadError(
                f"{path.name} has no tensor outputs (convert classifiers with zipmap disabled)"
            )
        self._session = session

    @property
    def default_outputs(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self._outputs)

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        results = self._session.run(list(outputs), dict(inputs))
        return {name: np.asarray(value) for name, value in zip(outputs, results, strict=True)}
