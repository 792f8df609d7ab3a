"""Model formats behind one interface (:class:`Model`); each format's libraries load lazily."""

from __future__ import annotations

import importlib
from typing import Final

import modelplane_contract as contract

from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.formats.base import LoadOptions, Model, TensorSpec, Trust

__all__ = ["LoadOptions", "Model", "TensorSpec", "Trust", "load_model"]

_CLASSES: Final = {
    "sklearn": "sklearn:SklearnModel",
    "xgboost": "xgboost:XGBoostModel",
    "lightgbm": "lightgbm:LightGBMModel",
    "onnx": "onnx:OnnxModel",
    "pytorch": "pytorch:PyTorchModel",
    "huggingface": "huggingface:HuggingFaceModel",
    "custom": "custom:CustomModel",
    "gguf": "gguf:GGUFModel",
    "tensorflow": "tensorflow:TensorFlowModel",
}
assert set(_CLASSES) == set(contract.FORMATS)


def load_model(format_name: str, options: LoadOptions) -> Model:
    """Load the artifact in ``options.model_dir`` with the module of ``format_name``."""
    target = _CLASSES.get(format_name)
    if target is None:
        raise ModelLoadError(
            f"unknown model format {format_name!r}: use one of {', '.join(contract.FORMATS)}"
        )
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    model: Model = getattr(module, class_name)(options)
    model.load()
    return model
