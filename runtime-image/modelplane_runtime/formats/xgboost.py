"""XGBoost boosters saved as JSON or UBJSON (``Booster.save_model``): data only, no code."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.formats.base import Arrays, Model, TensorSpec, find_artifact


class XGBoostModel(Model):
    format_name = "xgboost"

    def load(self) -> None:
        import xgboost

        path = find_artifact(self.options.model_dir, (".json", ".ubj"), "XGBoost model")
        booster = xgboost.Booster()
        try:
            booster.load_model(str(path))
        except xgboost.core.XGBoostError as error:
            raise ModelLoadError(f"cannot load the XGBoost model {path.name}: {error}") from error
        booster.set_param({"nthread": self.options.threads})
        self._booster = booster
        self._inputs = [TensorSpec("input-0", "FP32", (-1, booster.num_features()))]
        self._outputs = [TensorSpec("predict", "FP32", (-1,))]

    @property
    def booster(self) -> Any:
        """The loaded ``xgboost.Booster`` (the optimize step converts it)."""
        return self._booster

    @property
    def objective(self) -> str:
        """The learning objective the booster was trained with (what its predictions mean)."""
        return str(json.loads(self._booster.save_config())["learner"]["objective"]["name"])

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        features = next(iter(inputs.values()))
        # inplace_predict skips building a DMatrix; same trees, same results as Booster.predict.
        return {"predict": np.asarray(self._booster.inplace_predict(features))}
