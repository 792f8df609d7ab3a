"""The benchmark's models and request rows, made here from scikit-learn's own data (nothing downloaded)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import load_iris, make_classification
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests.bench.harness import Protocol

#: Distinct rows per model; the Lua script cycles through them.
ROWS = 4000
MODEL_FILE = "model.joblib"


#: Each format's file, as every server under test finds it (the path is passed where one is asked).
FILES = {"sklearn": MODEL_FILE, "xgboost": "model.json", "lightgbm": "model.txt"}


@dataclass(frozen=True)
class BenchModel:
    name: str  # also the name each server serves it under
    estimator: Any  # a scikit-learn estimator, or an XGBoost/LightGBM Booster
    rows: np.ndarray[Any, Any]  # the request rows, one per request
    directory: Path  # holds the model's file alone
    format: str = "sklearn"  # the runtime's format name

    @property
    def artifact(self) -> Path:
        return self.directory / FILES[self.format]

    def expected(self, rows: np.ndarray[Any, Any]) -> list[Any]:
        """What the library itself answers for ``rows``: an estimator's labels, a booster's predict
        (the positive class's probability for a binary objective), as every server returns it."""
        if self.format == "xgboost":
            return [float(value) for value in self.estimator.inplace_predict(rows.astype(np.float32))]
        if self.format == "lightgbm":
            return [float(value) for value in self.estimator.predict(rows)]
        return list(self.estimator.predict(rows).tolist())

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.format == "sklearn":
            joblib.dump(self.estimator, self.artifact)
        else:
            self.estimator.save_model(str(self.artifact))


@dataclass(frozen=True)
class Workload:
    label: str
    model: BenchModel
    protocol: Protocol


def _noisy_rows(base: np.ndarray[Any, Any], scale: float, seed: int) -> np.ndarray[Any, Any]:
    """Rows near the training data (so every class shows up), rounded as a client would send them."""
    rng = np.random.default_rng(seed)
    picks = base[rng.integers(0, len(base), ROWS)]
    rows = np.round(picks + rng.normal(0.0, scale, picks.shape), 3)
    unique = np.unique(rows, axis=0)
    if len(unique) < ROWS:  # vanishingly rare with these scales; refuse rather than send repeats
        raise RuntimeError(f"only {len(unique)} distinct rows of {ROWS}; raise the noise scale")
    return rows


def make_models(root: Path) -> list[BenchModel]:
    """The benchmark's scikit-learn models, saved with joblib.

    LogisticRegression on iris and a 100-tree RandomForest on 20 features (the original rows), and
    what users deploy beyond them: a Pipeline (StandardScaler + LogisticRegression) and a
    GradientBoostingClassifier (100 trees of depth 3), on the same 20 features; and a text pipeline
    (TfidfVectorizer + MultinomialNB) on short made-up reviews, strings in; and boosters of the two
    other tree libraries on the same 20 features (100 rounds each, their default depth/leaves,
    binary objective: each server answers the positive class's probability).
    """
    import lightgbm
    import xgboost

    iris_x, iris_y = load_iris(return_X_y=True)
    lr = LogisticRegression(max_iter=1000).fit(iris_x, iris_y)
    rf_x, rf_y = make_classification(n_samples=2000, n_features=20, n_informative=10, random_state=0)
    rf = RandomForestClassifier(n_estimators=100, random_state=0).fit(rf_x, rf_y)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(rf_x, rf_y)
    boosted = GradientBoostingClassifier(n_estimators=100, random_state=0).fit(rf_x, rf_y)
    texts, labels = _reviews(ROWS * 2, seed=5)
    text = make_pipeline(TfidfVectorizer(), MultinomialNB()).fit(texts[ROWS:], labels[ROWS:])
    xgb = xgboost.train(
        {"objective": "binary:logistic", "nthread": 1, "seed": 0},
        xgboost.DMatrix(rf_x, label=rf_y),
        num_boost_round=100,
    )
    lgb = lightgbm.train(
        {"objective": "binary", "num_threads": 1, "seed": 0, "verbose": -1},
        lightgbm.Dataset(rf_x, label=rf_y),
        num_boost_round=100,
    )
    models = [
        BenchModel("lr-iris", lr, _noisy_rows(iris_x, 0.2, seed=1), root / "lr-iris"),
        BenchModel("rf-20", rf, _noisy_rows(rf_x, 0.5, seed=2), root / "rf-20"),
        BenchModel("pipeline-20", pipeline, _noisy_rows(rf_x, 0.5, seed=3), root / "pipeline-20"),
        BenchModel("gb-20", boosted, _noisy_rows(rf_x, 0.5, seed=4), root / "gb-20"),
        BenchModel("text-nb", text, texts[:ROWS], root / "text-nb"),
        BenchModel("xgb-20", xgb, _noisy_rows(rf_x, 0.5, seed=6), root / "xgb-20", "xgboost"),
        BenchModel("lgb-20", lgb, _noisy_rows(rf_x, 0.5, seed=7), root / "lgb-20", "lightgbm"),
    ]
    for model in models:
        model.save()
    return models


def workloads(models: list[BenchModel]) -> list[Workload]:
    lr, rf, pipeline, boosted, text, xgb, lgb = models
    return [
        Workload("LR iris v1", lr, "v1"),
        Workload("LR iris v2", lr, "v2"),
        Workload("RF 100x20 v2", rf, "v2"),
        Workload("Pipeline scaler+LR v2", pipeline, "v2"),
        Workload("GB 100x20 v2", boosted, "v2"),
        Workload("Text TF-IDF+NB v2", text, "v2"),
        Workload("XGBoost 100x20 v2", xgb, "v2"),
        Workload("LightGBM 100x20 v2", lgb, "v2"),
    ]


_POSITIVE = ["good", "great", "wonderful", "moving", "funny", "warm", "brilliant"]
_NEGATIVE = ["bad", "dull", "awful", "boring", "long", "weak", "tedious"]
_NEUTRAL = [
    "film",
    "story",
    "actors",
    "plot",
    "music",
    "scenes",
    "ending",
    "camera",
    "the",
    "a",
    "and",
    "was",
    "very",
]


def _reviews(count: int, seed: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Distinct short reviews of 6-12 words and their sentiment (the majority of their tone words)."""
    rng = np.random.default_rng(seed)
    texts: dict[str, int] = {}
    while len(texts) < count:
        tone = int(rng.integers(0, 2))
        words = rng.choice(_NEUTRAL, int(rng.integers(4, 8))).tolist()
        words += rng.choice(_POSITIVE if tone else _NEGATIVE, int(rng.integers(2, 5))).tolist()
        words += rng.choice(_NEGATIVE if tone else _POSITIVE, int(rng.integers(0, 2))).tolist()
        rng.shuffle(words)
        texts.setdefault(" ".join(words), tone)
    return np.asarray(list(texts), dtype=object), np.asarray(list(texts.values()))
