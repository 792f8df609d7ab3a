"""scikit-learn estimators: skops (safe), joblib and pickle (code runs on load: trust required)."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelplane_runtime.datatypes import datatype_of
from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.formats.base import Arrays, Model, TensorSpec, find_artifact, require_code_trust

SKOPS_SUFFIXES = (".skops",)
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
#: Methods served as outputs, in the order tried; the first the estimator has is the default.
OUTPUT_METHODS = ("predict", "predict_proba", "decision_function", "transform")


class SklearnModel(Model):
    format_name = "sklearn"

    def load(self) -> None:
        path = find_artifact(self.options.model_dir, SKOPS_SUFFIXES + PICKLE_SUFFIXES, "scikit-learn model")
        estimator = _load_skops(path, self) if path.suffix == ".skops" else _load_pickle(path, self)
        methods = [name for name in OUTPUT_METHODS if callable(getattr(estimator, name, None))]
        if not methods:
            raise ModelLoadError(
                f"{path.name} holds a {type(estimator).__name__}, which has no predict method"
            )
        n_features = getattr(estimator, "n_features_in_", None)
        if n_features is None:
            raise ModelLoadError(f"{path.name} holds an estimator that is not fitted (no n_features_in_)")
        self._estimator = estimator
        self._methods = methods
        self._inputs = [TensorSpec("input-0", "FP64", (-1, int(n_features)))]
        classes = getattr(estimator, "classes_", None)
        predict_type = datatype_of(np.asarray(classes).dtype) if classes is not None else "FP64"
        self._outputs = [
            TensorSpec(
                name, predict_type if name == "predict" else "FP64", (-1,) if name == "predict" else (-1, -1)
            )
            for name in methods
        ]
        # Requests carry no column names; the estimator's check would warn on every call.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._outputs

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        features = next(iter(inputs.values()))
        return {name: np.asarray(getattr(self._estimator, name)(features)) for name in outputs}


def _load_skops(path: Path, model: Model) -> Any:
    import skops.io

    untrusted = skops.io.get_untrusted_types(file=path)
    if untrusted:
        require_code_trust(
            model.options.trust, f"{path.name} (with types skops does not trust: {', '.join(untrusted)})"
        )
    try:
        return skops.io.load(path, trusted=untrusted or None)
    except Exception as error:
        raise ModelLoadError(f"cannot load the skops file {path.name}: {error}") from error


def _load_pickle(path: Path, model: Model) -> Any:
    require_code_trust(model.options.trust, f"{path.name} (a {path.suffix[1:]} file)")
    try:
        if path.suffix == ".joblib":
            import joblib

            return joblib.load(path)
        with path.open("rb") as file:
            return pickle.load(file)
    except Exception as error:
        raise ModelLoadError(f"cannot load {path.name}: {error}") from error
