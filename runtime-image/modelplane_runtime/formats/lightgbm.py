"""LightGBM boosters saved as text (``Booster.save_model``): data only, no code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.formats.base import Arrays, Model, TensorSpec, find_artifact


class LightGBMModel(Model):
    format_name = "lightgbm"

    def load(self) -> None:
        import lightgbm

        path = find_artifact(self.options.model_dir, (".txt", ".lgb", ".lightgbm"), "LightGBM model")
        try:
            booster = lightgbm.Booster(model_file=str(path))
        except lightgbm.basic.LightGBMError as error:
            raise ModelLoadError(f"cannot load the LightGBM model {path.name}: {error}") from error
        self._booster = booster
        self._inputs = [TensorSpec("input-0", "FP64", (-1, booster.num_feature()))]
        self._outputs = [
            TensorSpec("predict", "FP64", (-1, -1) if booster.num_model_per_iteration() > 1 else (-1,))
        ]

    @property
    def booster(self) -> Any:
        """The loaded ``lightgbm.Booster`` (the optimize step converts it)."""
        return self._booster

    @property
    def objective(self) -> str:
        """The learning objective the booster was trained with, as the model file names it."""
        named = self._booster.params.get("objective") or self._booster.dump_model()["objective"]
        return str(named).split()[0]  # the model dump says e.g. "binary sigmoid:1"

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        features = next(iter(inputs.values()))
        return {"predict": np.asarray(self._booster.predict(features, num_threads=self.options.threads))}
