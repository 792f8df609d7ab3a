"""scikit-learn as users deploy it: every estimator family, pipelines, text and named columns.

Each model is fitted here, saved as a user saves it, loaded and served in-process over v2 and v1,
and its answers equal the estimator's own, exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification, make_regression
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    AdaBoostClassifier,
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, SGDClassifier
from sklearn.naive_bayes import BernoulliNB, GaussianNB, MultinomialNB
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import KBinsDiscretizer, OneHotEncoder, PolynomialFeatures, StandardScaler
from sklearn.svm import SVC, SVR, LinearSVC
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from tests.runtime.asgi import call_json
from tests.runtime.test_formats import predict_v1, predict_v2, serve_in_process

CLASSES_X, CLASSES_Y = make_classification(
    n_samples=300, n_features=6, n_informative=4, n_classes=3, random_state=0
)
REGRESSION_X, REGRESSION_Y = make_regression(n_samples=300, n_features=6, noise=5.0, random_state=0)
COUNTS_X = np.round(np.abs(CLASSES_X) * 3)  # non-negative, for the count-based naive Bayes
PROBE = np.random.default_rng(7).normal(size=(9, 6)) * 1.5  # rows the models have not seen

# (estimator, training features, training target): one or more of each family a user deploys.
FAMILIES: dict[str, Callable[[], tuple[Any, np.ndarray[Any, Any], np.ndarray[Any, Any]]]] = {
    "linear-logistic": lambda: (LogisticRegression(max_iter=1000), CLASSES_X, CLASSES_Y),
    "linear-regression": lambda: (LinearRegression(), REGRESSION_X, REGRESSION_Y),
    "linear-ridge": lambda: (Ridge(alpha=0.5), REGRESSION_X, REGRESSION_Y),
    "linear-sgd": lambda: (SGDClassifier(random_state=0), CLASSES_X, CLASSES_Y),
    "tree-classifier": lambda: (DecisionTreeClassifier(max_depth=5, random_state=0), CLASSES_X, CLASSES_Y),
    "tree-regressor": lambda: (
        DecisionTreeRegressor(max_depth=5, random_state=0),
        REGRESSION_X,
        REGRESSION_Y,
    ),
    "forest-classifier": lambda: (
        RandomForestClassifier(n_estimators=20, random_state=0),
        CLASSES_X,
        np.array(["a", "b", "c"])[CLASSES_Y],
    ),
    "forest-extra-trees-regressor": lambda: (
        ExtraTreesRegressor(n_estimators=10, random_state=0),
        REGRESSION_X,
        REGRESSION_Y,
    ),
    "boosting-gradient-classifier": lambda: (
        GradientBoostingClassifier(n_estimators=20, random_state=0),
        CLASSES_X,
        CLASSES_Y,
    ),
    "boosting-gradient-binary": lambda: (
        GradientBoostingClassifier(n_estimators=20, random_state=0),
        CLASSES_X,
        CLASSES_Y > 0,
    ),
    "boosting-gradient-regressor": lambda: (
        GradientBoostingRegressor(n_estimators=20, random_state=0),
        REGRESSION_X,
        REGRESSION_Y,
    ),
    "boosting-hist-classifier": lambda: (
        HistGradientBoostingClassifier(max_iter=20, random_state=0),
        CLASSES_X,
        CLASSES_Y,
    ),
    "boosting-adaboost": lambda: (AdaBoostClassifier(n_estimators=20, random_state=0), CLASSES_X, CLASSES_Y),
    "svm-svc": lambda: (SVC(random_state=0), CLASSES_X, CLASSES_Y),
    "svm-svc-calibrated": lambda: (
        CalibratedClassifierCV(SVC(random_state=0), ensemble=False),
        CLASSES_X,
        CLASSES_Y,
    ),
    "svm-linear": lambda: (LinearSVC(random_state=0), CLASSES_X, CLASSES_Y),
    "svm-svr": lambda: (SVR(), REGRESSION_X, REGRESSION_Y),
    "naive-bayes-gaussian": lambda: (GaussianNB(), CLASSES_X, CLASSES_Y),
    "naive-bayes-multinomial": lambda: (MultinomialNB(), COUNTS_X, CLASSES_Y),
    "naive-bayes-bernoulli": lambda: (BernoulliNB(), CLASSES_X, CLASSES_Y),
    "knn-classifier": lambda: (KNeighborsClassifier(n_neighbors=5), CLASSES_X, CLASSES_Y),
    "knn-regressor": lambda: (KNeighborsRegressor(n_neighbors=5), REGRESSION_X, REGRESSION_Y),
    "pipeline-scaler-logistic": lambda: (
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        CLASSES_X,
        CLASSES_Y,
    ),
    "pipeline-polynomial-ridge": lambda: (
        make_pipeline(PolynomialFeatures(2), StandardScaler(), Ridge()),
        REGRESSION_X,
        REGRESSION_Y,
    ),
    "pipeline-imputer-pca-svc": lambda: (
        make_pipeline(SimpleImputer(), PCA(n_components=3, random_state=0), SVC(random_state=0)),
        CLASSES_X,
        CLASSES_Y,
    ),
    "column-transformer-by-position": lambda: (
        make_pipeline(
            ColumnTransformer(
                [
                    ("scaled", StandardScaler(), [0, 1, 2]),
                    ("binned", KBinsDiscretizer(n_bins=4, quantile_method="averaged_inverted_cdf"), [3]),
                ],
                remainder="passthrough",
            ),
            LogisticRegression(max_iter=1000),
        ),
        CLASSES_X,
        CLASSES_Y,
    ),
}


def fit_and_save(family: str, model_dir: Path) -> Any:
    estimator, features, target = FAMILIES[family]()
    estimator.fit(features, target)
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, model_dir / "model.joblib")
    return estimator


def probe_for(family: str) -> np.ndarray[Any, Any]:
    return np.abs(np.round(PROBE * 3)) if family == "naive-bayes-multinomial" else PROBE


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_estimator_family_predicts_like_scikit_learn(family: str, tmp_path: Path) -> None:
    estimator = fit_and_save(family, tmp_path)
    model, app = serve_in_process(tmp_path, "sklearn", allow_pickle=True)
    outputs = [spec.name for spec in model.outputs]
    assert outputs[0] == "predict"
    rows = probe_for(family)
    served = predict_v2(app, rows, outputs=[{"name": name} for name in outputs])
    for name in outputs:
        expected = getattr(estimator, name)(rows)
        if expected.dtype.kind in "US":  # labels that are strings come back as BYTES
            assert served[name].tolist() == expected.tolist(), name
        else:
            np.testing.assert_array_equal(served[name], expected, err_msg=name)
    v1 = predict_v1(app, rows)
    assert v1.tolist() == estimator.predict(rows).tolist()
    # One row at a time too: what a lone request gets.
    assert predict_v1(app, rows[:1]).tolist() == estimator.predict(rows[:1]).tolist()


REVIEWS = [
    "a wonderful film, moving and funny",
    "dull, far too long and badly acted",
    "the best thing I have seen this year",
    "a waste of two hours",
    "funny, warm, wonderful",
    "badly written and dull",
    "moving performances, a great story",
    "I want my money back, awful",
]
SENTIMENT = ["pos", "neg", "pos", "neg", "pos", "neg", "pos", "neg"]
UNSEEN_TEXT = ["wonderful and funny", "awful, dull and long", "a film", "", "naïve but moving ✓"]


def text_pipeline() -> Pipeline:
    return make_pipeline(TfidfVectorizer(), MultinomialNB()).fit(REVIEWS, SENTIMENT)


def v2_strings(app: Any, texts: list[str], outputs: list[str]) -> dict[str, Any]:
    payload = {
        "inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}],
        "outputs": [{"name": name} for name in outputs],
    }
    status, body = call_json(app, "POST", "/v2/models/m/infer", payload)
    assert status == 200, body
    return {output["name"]: output for output in body["outputs"]}


def test_a_text_pipeline_saved_with_joblib_takes_one_string_per_row(tmp_path: Path) -> None:
    pipeline = text_pipeline()
    joblib.dump(pipeline, tmp_path / "model.joblib")
    model, app = serve_in_process(tmp_path, "sklearn", allow_pickle=True)
    assert model.metadata()["inputs"] == [{"name": "input-0", "datatype": "BYTES", "shape": [-1]}]
    served = v2_strings(app, UNSEEN_TEXT, ["predict", "predict_proba"])
    assert served["predict"]["datatype"] == "BYTES"
    assert served["predict"]["data"] == pipeline.predict(UNSEEN_TEXT).tolist()
    np.testing.assert_array_equal(
        np.asarray(served["predict_proba"]["data"]).reshape(served["predict_proba"]["shape"]),
        pipeline.predict_proba(UNSEEN_TEXT),
    )
    status, body = call_json(app, "POST", "/v1/models/m:predict", {"instances": UNSEEN_TEXT})
    assert status == 200, body
    assert body["predictions"] == pipeline.predict(UNSEEN_TEXT).tolist()
    status, body = call_json(app, "POST", "/v1/models/m:predict", {"instances": [[1.0, 2.0]]})
    assert status == 400, body


def test_a_text_pipeline_saved_with_skops_and_numeric_labels(tmp_path: Path) -> None:
    labels = [1 if label == "pos" else 0 for label in SENTIMENT]
    pipeline = make_pipeline(CountVectorizer(ngram_range=(1, 2)), LogisticRegression()).fit(REVIEWS, labels)
    skops.io.dump(pipeline, tmp_path / "model.skops")
    _, app = serve_in_process(tmp_path, "sklearn")
    served = v2_strings(app, UNSEEN_TEXT, ["predict", "predict_proba"])
    assert served["predict"]["data"] == pipeline.predict(UNSEEN_TEXT).tolist()
    np.testing.assert_array_equal(
        np.asarray(served["predict_proba"]["data"]).reshape(-1, 2), pipeline.predict_proba(UNSEEN_TEXT)
    )


def test_an_unfitted_estimator_is_refused_saying_so(tmp_path: Path) -> None:
    joblib.dump(make_pipeline(StandardScaler(), LogisticRegression()), tmp_path / "model.joblib")
    with pytest.raises(Exception, match="not fitted"):
        serve_in_process(tmp_path, "sklearn", allow_pickle=True)


def customers() -> tuple[Any, np.ndarray[Any, Any]]:
    """A DataFrame of named, mixed-type columns (numbers, a category, free text, one to drop)."""
    import pandas

    rng = np.random.default_rng(3)
    frame = pandas.DataFrame(
        {
            "age": rng.integers(18, 80, 200),
            "income": np.round(rng.normal(50.0, 12.0, 200), 2),
            "city": rng.choice(["paris", "rome", "oslo", "lima"], 200),
            "note": rng.choice(["pays on time", "late twice", "new customer", "asked for credit"], 200),
            "row_id": np.arange(200),
        }
    )
    target = ((frame["age"] > 45) ^ (frame["city"] == "oslo")).to_numpy().astype(int)
    return frame, target


def column_pipeline() -> tuple[Pipeline, Any]:
    frame, target = customers()
    columns = ColumnTransformer(
        [
            ("numbers", StandardScaler(), ["age", "income"]),
            (
                "city",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
                ),
                ["city"],
            ),
            ("note", TfidfVectorizer(), "note"),
            ("unused", "drop", ["row_id"]),
        ]
    )
    return make_pipeline(columns, LogisticRegression(max_iter=1000)).fit(frame, target), frame


REQUEST_ROWS: dict[str, list[Any]] = {
    "age": [23, 67, 45, 80],
    "income": [31.5, 72.25, 50.0, 12.0],
    "city": ["oslo", "paris", "tokyo", "lima"],  # tokyo: a city the encoder has not seen
    "note": ["late twice", "pays on time", "asked twice for credit", ""],
}


@pytest.mark.parametrize("save", ["joblib", "skops"])
def test_a_column_transformer_takes_named_string_and_numeric_columns(tmp_path: Path, save: str) -> None:
    import pandas

    pipeline, _ = column_pipeline()
    if save == "joblib":
        joblib.dump(pipeline, tmp_path / "model.joblib")
    else:
        skops.io.dump(pipeline, tmp_path / "model.skops")
    model, app = serve_in_process(tmp_path, "sklearn", allow_pickle=True)
    assert model.metadata()["inputs"] == [
        {"name": "age", "datatype": "FP64", "shape": [-1]},
        {"name": "income", "datatype": "FP64", "shape": [-1]},
        {"name": "city", "datatype": "BYTES", "shape": [-1]},
        {"name": "note", "datatype": "BYTES", "shape": [-1]},
    ]
    expected_frame = pandas.DataFrame(REQUEST_ROWS)
    rows = len(REQUEST_ROWS["age"])
    datatypes = {"age": "INT64", "income": "FP64", "city": "BYTES", "note": "BYTES"}
    payload: dict[str, list[dict[str, Any]]] = {
        "inputs": [
            {"name": name, "shape": [rows], "datatype": datatypes[name], "data": values}
            for name, values in reversed(REQUEST_ROWS.items())  # by name, in any order
        ],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }
    status, body = call_json(app, "POST", "/v2/models/m/infer", payload)
    assert status == 200, body
    served = {output["name"]: output for output in body["outputs"]}
    assert served["predict"]["data"] == pipeline.predict(expected_frame).tolist()
    np.testing.assert_array_equal(
        np.asarray(served["predict_proba"]["data"]).reshape(rows, 2), pipeline.predict_proba(expected_frame)
    )
    instances = [{name: values[row] for name, values in REQUEST_ROWS.items()} for row in range(rows)]
    status, body = call_json(app, "POST", "/v1/models/m:predict", {"instances": instances})
    assert status == 200, body
    assert body["predictions"] == pipeline.predict(expected_frame).tolist()

    del instances[1]["city"]
    status, body = call_json(app, "POST", "/v1/models/m:predict", {"instances": instances})
    assert status == 400
    assert "instances[1] has no 'city'" in body["error"]
    payload["inputs"] = payload["inputs"][1:]  # no "note"
    status, body = call_json(app, "POST", "/v2/models/m/infer", payload)
    assert status == 400
    assert "missing ['note']" in body["error"]


FOREST_X, FOREST_Y = make_classification(
    n_samples=1500, n_features=12, n_informative=8, n_classes=3, random_state=1
)
FORESTS: dict[str, Callable[[], Any]] = {
    "random-forest-3-classes": lambda: RandomForestClassifier(n_estimators=60, random_state=0).fit(
        FOREST_X, np.array(["low", "mid", "high"])[FOREST_Y]
    ),
    "extra-trees-binary": lambda: ExtraTreesClassifier(n_estimators=30, random_state=0).fit(
        FOREST_X, FOREST_Y > 0
    ),
    "random-forest-regressor": lambda: RandomForestRegressor(n_estimators=30, random_state=0).fit(
        FOREST_X, FOREST_X[:, 0] * 2 + FOREST_Y
    ),
    "extra-trees-regressor": lambda: ExtraTreesRegressor(n_estimators=20, max_depth=8, random_state=0).fit(
        FOREST_X, FOREST_X[:, 1]
    ),
}


@pytest.mark.parametrize("forest", sorted(FORESTS))
def test_forests_run_compiled_and_answer_exactly_as_scikit_learn(forest: str, tmp_path: Path) -> None:
    from modelplane_runtime.formats.sklearn import _split_point_rows

    estimator = FORESTS[forest]()
    skops.io.dump(estimator, tmp_path / "model.skops")
    model, _ = serve_in_process(tmp_path, "sklearn")
    assert "treelite" in model.metadata()["parameters"]["engine"]
    rng = np.random.default_rng(11)
    probes = [
        rng.normal(size=(300, 12)) * 2,
        _split_point_rows(estimator),  # values either side of every split: where floats disagree
        FOREST_X[:1],
    ]
    outputs = [spec.name for spec in model.outputs]
    for rows in probes:
        served = model.predict({"input-0": rows}, outputs)
        for name in outputs:
            np.testing.assert_array_equal(served[name], getattr(estimator, name)(rows), err_msg=name)


def test_a_multi_output_forest_runs_as_scikit_learn_itself(tmp_path: Path) -> None:
    estimator = RandomForestRegressor(n_estimators=5, random_state=0).fit(
        FOREST_X, np.stack([FOREST_X[:, 0], FOREST_Y], axis=1)
    )
    joblib.dump(estimator, tmp_path / "model.joblib")
    model, _ = serve_in_process(tmp_path, "sklearn", allow_pickle=True)
    assert model.engine is None
    rows = FOREST_X[:7]
    np.testing.assert_array_equal(
        model.predict({"input-0": rows}, ["predict"])["predict"], estimator.predict(rows)
    )


def test_non_finite_inputs_are_left_to_scikit_learn(tmp_path: Path) -> None:
    """A NaN is a missing value to some estimators and an error to others: each answers as its own."""
    features = FOREST_X.copy()
    features[::7, 2] = np.nan
    takes_missing = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(features, FOREST_Y)
    joblib.dump(takes_missing, tmp_path / "model.joblib")
    model, _ = serve_in_process(tmp_path, "sklearn", allow_pickle=True)
    rows = features[:14]
    np.testing.assert_array_equal(
        model.predict({"input-0": rows}, ["predict_proba"])["predict_proba"],
        takes_missing.predict_proba(rows),
    )
    refuses = tmp_path / "refuses"
    refuses.mkdir()
    joblib.dump(LogisticRegression(max_iter=1000).fit(FOREST_X, FOREST_Y), refuses / "model.joblib")
    model, _ = serve_in_process(refuses, "sklearn", allow_pickle=True)
    with pytest.raises(ValueError, match="NaN"):
        model.predict({"input-0": rows}, ["predict"])
