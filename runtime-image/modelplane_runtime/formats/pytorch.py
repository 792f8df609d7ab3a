"""TorchScript modules (``torch.jit.save``) on CPU; needs the ``pytorch`` extra."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.formats.base import Arrays, Model, TensorSpec, find_artifact


class PyTorchModel(Model):
    format_name = "pytorch"

    def load(self) -> None:
        try:
            # Typed as Any: the extra is optional, and its stubs are there only where it is installed.
            torch: Any = importlib.import_module("torch")
        except ImportError as error:
            raise ModelLoadError("format pytorch needs torch: install modelplane-runtime[pytorch]") from error
        path = find_artifact(self.options.model_dir, (".pt", ".pth", ".torchscript"), "TorchScript model")
        torch.set_num_threads(self.options.threads)
        try:
            with warnings.catch_warnings():
                # torch 2.9+ deprecates TorchScript; serving the artifacts users have is the point.
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as error:
            raise ModelLoadError(
                f"cannot load {path.name} as TorchScript (save it with torch.jit.save): {error}"
            ) from error
        module.eval()
        self._torch = torch
        self._module = module
        # TorchScript keeps no input signature; a sample request beside the model warms it up.
        self._inputs = [TensorSpec("input-0", "FP32", (-1, -1))]
        self._outputs = [TensorSpec("predict", "FP32", (-1, -1))]

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        tensors = [self._torch.from_numpy(np.ascontiguousarray(array)) for array in inputs.values()]
        with self._torch.inference_mode():
            result = self._module(*tensors)
        return {"predict": result.detach().cpu().numpy()}
