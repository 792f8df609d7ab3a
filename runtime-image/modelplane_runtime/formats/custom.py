"""A user's own model class, named by import path (``package.module:Class``).

The class may come installed in the image, or ship inside the artifact (``model.py`` beside the
weights); code from the artifact runs only when its digest is pinned, as for pickle.

The class is built as ``Class(model_dir)``; it may define ``load()``, and must define
``predict(inputs: dict[str, numpy.ndarray]) -> dict[str, numpy.ndarray] | numpy.ndarray``. Its
signature may be given as ``inputs`` / ``outputs`` attributes: lists of
``{"name": ..., "datatype": ..., "shape": [...]}``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import modelplane_contract as contract
import numpy as np

from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.formats.base import Arrays, Model, TensorSpec, require_code_trust

DEFAULT_INPUTS = [TensorSpec("input-0", "FP64", (-1, -1))]
DEFAULT_OUTPUTS = [TensorSpec("predict", "FP64", (-1,))]


def _specs(value: Any, default: list[TensorSpec], what: str) -> list[TensorSpec]:
    if value is None:
        return default
    try:
        return [
            TensorSpec(str(item["name"]), str(item["datatype"]), tuple(int(d) for d in item["shape"]))
            for item in value
        ]
    except (KeyError, TypeError, ValueError) as error:
        raise ModelLoadError(
            f"the custom class's {what} must be a list of {{'name', 'datatype', 'shape'}}: {error}"
        ) from error


class CustomModel(Model):
    format_name = "custom"

    def load(self) -> None:
        class_path = self.options.custom_class
        if not class_path:
            raise ModelLoadError(
                f"format custom needs the class to serve: set --custom-class or {contract.ENV_CUSTOM_CLASS} "
                "to package.module:Class"
            )
        module_name, sep, class_name = class_path.partition(":")
        if not sep:
            module_name, _, class_name = class_path.rpartition(".")
        if not module_name or not class_name:
            raise ModelLoadError(f"custom class {class_path!r} is not of the form package.module:Class")
        model_dir = self.options.model_dir
        top_level = module_name.split(".")[0]
        if (model_dir / f"{top_level}.py").is_file() or (model_dir / top_level / "__init__.py").is_file():
            require_code_trust(self.options.trust, f"{top_level} shipped inside the model artifact")
            sys.path.insert(0, str(model_dir))
        try:
            module = importlib.import_module(module_name)
            cls = getattr(module, class_name)
        except (ImportError, AttributeError) as error:
            raise ModelLoadError(f"cannot import the custom class {class_path}: {error}") from error
        try:
            instance = cls(str(model_dir))
            if callable(getattr(instance, "load", None)):
                instance.load()
        except Exception as error:
            raise ModelLoadError(f"the custom class {class_path} failed to load: {error!r}") from error
        if not callable(getattr(instance, "predict", None)):
            raise ModelLoadError(f"the custom class {class_path} has no predict(inputs) method")
        self._instance = instance
        self._inputs = _specs(getattr(instance, "inputs", None), DEFAULT_INPUTS, "inputs")
        self._outputs = _specs(getattr(instance, "outputs", None), DEFAULT_OUTPUTS, "outputs")

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        result = self._instance.predict(dict(inputs))
        if not isinstance(result, Mapping):
            result = {self._outputs[0].name: result}
        return {name: np.asarray(result[name]) for name in outputs if name in result}
