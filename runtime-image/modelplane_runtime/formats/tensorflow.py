"""TensorFlow SavedModel directories and Keras 3 ``.keras`` files on CPU; needs the ``tensorflow`` extra.

A SavedModel is served through one of its signatures (``serving_default`` unless the spec names
another): the signature gives the inputs and outputs by name, dtype and shape, strings as BYTES. A
``.keras`` file is served through the model's own inputs and outputs.

TensorFlow's thread pools do not survive a fork, so the model is served from the process that
loaded it (one worker per pod, ``fork_safe`` False); scale with replicas, and with
``threads`` for TensorFlow's own intra-op parallelism.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.formats.base import Arrays, Model, TensorSpec, find_artifact

DEFAULT_SIGNATURE: Final = "serving_default"
SAVED_MODEL_FILE: Final = "saved_model.pb"

_DATATYPE_BY_DTYPE: Final = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "string": "BYTES",
}


def _datatype(dtype_name: str, where: str) -> str:
    datatype = _DATATYPE_BY_DTYPE.get(dtype_name)
    if datatype is None:
        raise ModelLoadError(
            f"{where} has dtype {dtype_name}, which is not served (only numbers, bool, string)"
        )
    return datatype


def _shape(dims: Any) -> tuple[int, ...]:
    return tuple(-1 if dim is None else int(dim) for dim in dims)


class TensorFlowModel(Model):
    format_name = "tensorflow"
    fork_safe = False

    def load(self) -> None:
        # Quiet C++ start-up logs unless the pod asks for them.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            # Typed as Any: the extra is optional, and its stubs are there only where it is installed.
            tf: Any = importlib.import_module("tensorflow")
        except ImportError as error:
            raise ModelLoadError(
                "format tensorflow needs TensorFlow: use the runtime image's tensorflow variant "
                "or install modelplane-runtime[tensorflow]"
            ) from error
        self._tf = tf
        try:
            tf.config.threading.set_intra_op_parallelism_threads(self.options.threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # TensorFlow already ran in this process (an in-process test): its pools stay as they are
        saved_models = sorted(self.options.model_dir.rglob(SAVED_MODEL_FILE))
        if len(saved_models) > 1:
            names = ", ".join(str(p.parent.relative_to(self.options.model_dir)) for p in saved_models)
            raise ModelLoadError(f"more than one SavedModel in {self.options.model_dir} ({names}): keep one")
        signature = self.options.signature or DEFAULT_SIGNATURE
        if saved_models:
            self._load_saved_model(saved_models[0].parent, signature)
        else:
            path = find_artifact(
                self.options.model_dir, (".keras",), f"SavedModel ({SAVED_MODEL_FILE}) or Keras"
            )
            if signature != DEFAULT_SIGNATURE:
                raise ModelLoadError(
                    f"signature {signature!r} was asked for, but {path.name} is a Keras file, which has "
                    "no signatures: export a SavedModel, or leave spec.model.signature unset"
                )
            self._load_keras(path)

    def _load_saved_model(self, directory: Path, signature: str) -> None:
        try:
            loaded = self._tf.saved_model.load(str(directory))
        except Exception as error:
            raise ModelLoadError(f"cannot load the SavedModel in {directory.name}: {error}") from error
        signatures = dict(loaded.signatures)
        if signature not in signatures:
            have = ", ".join(sorted(signatures)) or "none"
            raise ModelLoadError(
                f"the SavedModel has no signature {signature!r} (it has: {have}): "
                "set spec.model.signature to one of them"
            )
        function = signatures[signature]
        _, keyword_inputs = function.structured_input_signature
        self._inputs = [
            TensorSpec(name, _datatype(spec.dtype.name, f"input {name!r}"), _shape(spec.shape))
            for name, spec in sorted(keyword_inputs.items())
        ]
        self._outputs = [
            TensorSpec(name, _datatype(spec.dtype.name, f"output {name!r}"), _shape(spec.shape))
            for name, spec in sorted(function.structured_outputs.items())
        ]
        self._keep_alive = loaded  # the signature's variables live as long as the loaded object
        self._signature = function
        self._keras: Any = None
        self._call = self.graph_function()
        self.engine = f"SavedModel signature {signature}"

    def _load_keras(self, path: Path) -> None:
        try:
            keras: Any = importlib.import_module("keras")
            model = keras.saving.load_model(str(path), compile=False)
        except Exception as error:
            raise ModelLoadError(f"cannot load the Keras model {path.name}: {error}") from error
        inputs = list(model.inputs)
        outputs = list(model.outputs)
        output_names = list(getattr(model, "output_names", None) or [])
        if len(output_names) != len(outputs):
            output_names = [f"output-{index}" for index in range(len(outputs))]
        self._inputs = [
            TensorSpec(
                tensor.name, _datatype(str(tensor.dtype), f"input {tensor.name!r}"), _shape(tensor.shape)
            )
            for tensor in inputs
        ]
        self._outputs = [
            TensorSpec(name, _datatype(str(tensor.dtype), f"output {name!r}"), _shape(tensor.shape))
            for name, tensor in zip(output_names, outputs, strict=True)
        ]
        self._keras = model
        self._signature = None
        self._call = self.graph_function()

    @property
    def default_outputs(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.outputs)

    def graph_function(self) -> Callable[..., dict[str, Any]]:
        """The model as TensorFlow calls it in a graph (what ``tf.function`` traces): the inputs
        positionally, in ``inputs`` order, to a dict of tensors by served output name."""
        names = [spec.name for spec in self._inputs]
        if self._keras is None:
            signature = self._signature

            def call_signature(*tensors: Any) -> dict[str, Any]:
                return dict(signature(**dict(zip(names, tensors, strict=True))))

            return call_signature
        keras_model = self._keras
        output_names = [spec.name for spec in self._outputs]

        def call_keras(*tensors: Any) -> dict[str, Any]:
            result = keras_model(tensors[0] if len(tensors) == 1 else list(tensors), training=False)
            values = result if isinstance(result, list | tuple) else [result]
            return dict(zip(output_names, values, strict=True))

        return call_keras

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        tensors = [self._tf.constant(inputs[spec.name]) for spec in self._inputs]
        named = self._call(*tensors)
        return {name: _numpy(named[name]) for name in outputs}


def _numpy(tensor: Any) -> np.ndarray[Any, Any]:
    array = np.asarray(tensor.numpy() if hasattr(tensor, "numpy") else tensor)
    if array.dtype.kind == "S":  # tf.string comes back as fixed-width bytes: BYTES is an object array
        array = array.astype(object)
    return array
