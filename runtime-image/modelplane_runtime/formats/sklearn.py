"""scikit-learn estimators: skops (safe), joblib and pickle (code runs on load: trust required).

What a request carries follows what the estimator was fitted on, and the signature says which:

- numbers: one FP64 input ``[-1, n_features_in_]``, a row of features per item;
- text, when the estimator (or its pipeline's first step) is a text vectorizer: one BYTES input
  ``[-1]``, a string per row (v1: a list of strings);
- named columns, when it starts with a ColumnTransformer fitted on a DataFrame: one input ``[-1]``
  per column it uses, by the column's name (BYTES where the column held strings, FP64 for numbers;
  v1: one object per row keyed by column), assembled into a pandas DataFrame in the fitted order.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import threadpoolctl

from modelplane_runtime.datatypes import datatype_of
from modelplane_runtime.errors import ModelLoadError
from modelplane_runtime.formats.base import Arrays, Model, TensorSpec, find_artifact, require_code_trust

SKOPS_SUFFIXES = (".skops",)
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
#: Methods served as outputs, in the order tried; the first the estimator has is the default.
OUTPUT_METHODS = ("predict", "predict_proba", "decision_function", "transform")
SKLEARN_MODULE_PREFIX = "sklearn."


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
        _require_fitted(estimator, path.name)
        self._layout, self._inputs, self._examples = _input_signature(estimator, path.name)
        self._estimator = estimator
        self._methods = methods
        # One thread per worker process for OpenMP and BLAS (histogram boosting, k-NN, linear
        # algebra): the runtime scales by processes, and spinning thread pools would fight each
        # other; it also keeps the load-time warm-up from leaving a thread pool behind the fork.
        threadpoolctl.threadpool_limits(limits=self.options.threads)
        self._compiled = _compiled_forest(estimator, self.options.threads)
        if self._compiled:
            import treelite

            self.engine = COMPILED_FOREST_ENGINE.format(version=treelite.__version__)
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

    def example_inputs(self) -> Arrays | None:
        return self._examples or None

    @property
    def estimator(self) -> Any:
        """The fitted estimator as loaded (the optimize step converts it)."""
        return self._estimator

    @property
    def takes_matrix(self) -> bool:
        """One numeric matrix in (not strings, not named columns)."""
        return self._layout == MATRIX

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        features: Any
        if self._layout == COLUMNS:
            import pandas

            features = pandas.DataFrame(
                {
                    spec.name: _strings(inputs[spec.name]) if spec.datatype == "BYTES" else inputs[spec.name]
                    for spec in self._inputs
                }
            )
        else:
            features = next(iter(inputs.values()))
            if self._layout == TEXT:
                features = _strings(features)
        if not _finite(features):
            # scikit-learn decides what a NaN or an infinity means (an error, or a missing value).
            return {name: getattr(self._estimator, name)(features) for name in outputs}
        compiled = self._compiled
        # The input is finite, so scikit-learn's check for that would pass: skip it, and the
        # re-validation of hyper-parameters already validated at fit (both public settings).
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            return {
                name: (compiled[name] if name in compiled else getattr(self._estimator, name))(features)
                for name in outputs
            }


def _require_fitted(estimator: Any, file_name: str) -> None:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(estimator)
    except NotFittedError as error:
        raise ModelLoadError(f"{file_name} holds an estimator that is not fitted: {error}") from error
    except TypeError as error:  # not an estimator at all (check_is_fitted says which)
        raise ModelLoadError(f"{file_name}: {error}") from error


def _first_step(estimator: Any) -> Any:
    """What first sees a request: the estimator, or the first real step of its (nested) pipelines."""
    from sklearn.pipeline import Pipeline

    while isinstance(estimator, Pipeline):
        steps = [step for _, step in estimator.steps if step not in (None, "passthrough")]
        if not steps:
            break
        estimator = steps[0]
    return estimator


MATRIX, TEXT, COLUMNS = "matrix", "text", "columns"


def _input_signature(estimator: Any, file_name: str) -> tuple[str, list[TensorSpec], Arrays]:
    """How requests look (:data:`MATRIX`, :data:`TEXT` or :data:`COLUMNS`), the inputs, and a warm-up row."""
    from sklearn.compose import ColumnTransformer

    first = _first_step(estimator)
    if _is_text_vectorizer(first):
        return TEXT, [TensorSpec("input-0", "BYTES", (-1,))], {}
    if isinstance(first, ColumnTransformer) and hasattr(first, "feature_names_in_"):
        columns = _column_inputs(first)
        specs = [TensorSpec(name, datatype, (-1,)) for name, (datatype, _) in columns.items()]
        examples = {name: _column(datatype, [example]) for name, (datatype, example) in columns.items()}
        return COLUMNS, specs, examples
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features is None:
        raise ModelLoadError(
            f"{file_name} holds a {type(estimator).__name__} whose input is none of: a row of numbers "
            "(it has no n_features_in_), text (it does not start with a text vectorizer), named columns "
            "(it does not start with a ColumnTransformer fitted on a DataFrame)"
        )
    return MATRIX, [TensorSpec("input-0", "FP64", (-1, int(n_features)))], {}


def _is_text_vectorizer(step: Any) -> bool:
    from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer

    return isinstance(step, CountVectorizer | HashingVectorizer)  # TfidfVectorizer is a CountVectorizer


def _column_inputs(transformer: Any) -> dict[str, tuple[str, Any]]:
    """Each column the ColumnTransformer uses, in fitted order: its datatype and a value it knows.

    A column is BYTES when what takes it learned strings (an encoder's categories, an imputer's
    fill values, a text vectorizer), FP64 otherwise. Dropped columns are not asked for.
    """
    names = [str(name) for name in transformer.feature_names_in_]
    found: dict[str, tuple[str, Any]] = {}
    for _, step, selection in transformer.transformers_:
        if isinstance(step, str) and step == "drop":
            continue
        for position, name in enumerate(_selected(selection, names)):
            datatype, example = _taken_as(step, position, isinstance(selection, str))
            if name not in found or datatype == "BYTES":
                found[name] = (datatype, example)
    return {name: found[name] for name in names if name in found}


def _selected(selection: Any, names: list[str]) -> list[str]:
    """The column names a ColumnTransformer selection (name, position, list, mask, slice) stands for."""
    if isinstance(selection, str):
        return [selection]
    if isinstance(selection, int | np.integer):
        return [names[int(selection)]]
    if isinstance(selection, slice):
        if isinstance(selection.start, str) or isinstance(selection.stop, str):
            start = names.index(selection.start) if selection.start is not None else 0
            stop = names.index(selection.stop) + 1 if selection.stop is not None else len(names)
            return names[start:stop]  # a slice of names includes its end, as in pandas
        return names[selection]
    items = np.asarray(selection)
    if items.dtype.kind == "b":
        return [name for name, keep in zip(names, items, strict=True) if keep]
    if items.dtype.kind in "iu":
        return [names[int(index)] for index in items]
    return [str(item) for item in items]


def _taken_as(step: Any, position: int, one_column: bool) -> tuple[str, Any]:
    """The datatype of the column at ``position`` of a step's columns, and a value the step knows."""
    from sklearn.pipeline import Pipeline

    steps = [part for _, part in step.steps] if isinstance(step, Pipeline) else [step]
    for part in steps:
        if _is_text_vectorizer(part) and one_column:
            return "BYTES", "text"
        for learned in ("categories_", "statistics_"):
            values = getattr(part, learned, None)
            if values is not None and position < len(values):
                value = values[position]
                example = value[0] if isinstance(value, np.ndarray) and value.ndim and len(value) else value
                if isinstance(example, str | bytes):
                    return "BYTES", example
                if isinstance(example, int | float | np.number) and np.isfinite(example):
                    return "FP64", float(example)
                return "FP64", 0.0
    return "FP64", 0.0


def _column(datatype: str, values: list[Any]) -> np.ndarray[Any, Any]:
    if datatype != "BYTES":
        return np.asarray(values, dtype=np.float64)
    column = np.empty(len(values), dtype=object)
    column[:] = [value.encode() if isinstance(value, str) else value for value in values]
    return column


def _finite(features: Any) -> bool:
    """Whether the input holds no NaN or infinity (a DataFrame: left to scikit-learn to check)."""
    if not isinstance(features, np.ndarray):
        return False
    return features.dtype.kind != "f" or bool(np.isfinite(features).all())


def _strings(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """BYTES items as str (what the estimator was fitted on); a value that is not UTF-8 is a ValueError."""
    strings = np.empty(array.shape, dtype=object)
    strings.ravel()[:] = [item.decode() if isinstance(item, bytes) else item for item in array.ravel()]
    return strings


COMPILED_FOREST_ENGINE = (
    "treelite {version}: the forest's trees compiled, the same thresholds and leaf values added up in "
    "the same order (checked equal to scikit-learn's own predictions at load)"
)
#: Rows of the probe a compiled forest must answer exactly as scikit-learn does before it is used.
PROBE_ROWS = 512


def _compiled_forest(estimator: Any, threads: int) -> dict[str, Callable[[Any], Any]]:
    """predict (and predict_proba) of a random forest or extra-trees ensemble through treelite.

    A small call to a scikit-learn forest goes mostly to job machinery around each tree; treelite,
    the maintained tree-ensemble compiler, imports the trees (thresholds and leaf values, exactly)
    and walks them without it. Only the forest classes themselves (a subclass may change predict),
    single-output, and only when a probe at the trees' own split points agrees exactly.
    """
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )

    classifier = type(estimator) in (RandomForestClassifier, ExtraTreesClassifier)
    if not (classifier or type(estimator) in (RandomForestRegressor, ExtraTreesRegressor)):
        return {}
    if estimator.n_outputs_ != 1:
        return {}
    import treelite

    compiled = treelite.sklearn.import_model(estimator)

    def walk(features: Any) -> Any:
        # As scikit-learn's trees do, compare float32 features with the (float64) thresholds.
        rows = np.asarray(features, dtype=np.float32)
        return treelite.gtil.predict(compiled, rows, nthread=threads).reshape(len(rows), -1)

    engines: dict[str, Callable[[Any], Any]]
    if classifier:
        classes = estimator.classes_

        def predict(features: Any) -> Any:
            return classes.take(np.argmax(walk(features), axis=1), axis=0)  # as ForestClassifier.predict

        engines = {"predict": predict, "predict_proba": walk}
    else:
        engines = {"predict": lambda features: walk(features)[:, 0]}
    probe = _split_point_rows(estimator)
    for name, engine in engines.items():
        if not np.array_equal(engine(probe), getattr(estimator, name)(probe)):
            return {}
    return engines


def _split_point_rows(forest: Any) -> np.ndarray[Any, Any]:
    """Rows whose values sit just either side of the forest's own thresholds (where floats disagree)."""
    rng = np.random.default_rng(0)
    n_features = int(forest.n_features_in_)
    thresholds: list[list[float]] = [[] for _ in range(n_features)]
    for tree in forest.estimators_:
        structure = tree.tree_
        for feature, threshold in zip(structure.feature, structure.threshold, strict=True):
            if feature >= 0:  # leaves have feature -2
                thresholds[feature].append(threshold)
    rows = np.zeros((PROBE_ROWS, n_features), dtype=np.float32)
    for feature, values in enumerate(thresholds):
        if values:
            picked = np.asarray(values, dtype=np.float32)[rng.integers(0, len(values), PROBE_ROWS)]
            sides = np.where(rng.random(PROBE_ROWS) < 0.5, -np.inf, np.inf).astype(np.float32)
            nudged = np.nextafter(picked, sides)
            rows[:, feature] = np.where(rng.random(PROBE_ROWS) < 0.5, picked, nudged)
    return rows.astype(np.float64)


def _load_skops(path: Path, model: Model) -> Any:
    import skops.io

    untrusted = skops.io.get_untrusted_types(file=path)
    # scikit-learn's own classes (e.g. sklearn.tree._tree.Tree, which skops does not trust by
    # default) are rebuilt from data by skops; anything else could be a gadget and needs trust.
    foreign = [name for name in untrusted if not name.startswith(SKLEARN_MODULE_PREFIX)]
    if foreign:
        require_code_trust(
            model.options.trust, f"{path.name} (with types from outside scikit-learn: {', '.join(foreign)})"
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
