"""XGBoost and LightGBM boosters on KServe's Python ModelServer, as KServe's xgbserver and lgbserver
serve them.

KServe publishes those servers as images, not on PyPI, so the benchmark carries equivalents of
their model classes (as tests/bench/kserve_sklearn.py does for sklearnserver): the booster loaded
from --model_dir with KServe's thread setting, a DMatrix built per request for XGBoost, Booster.predict
on the decoded input for LightGBM, KServe's own input/output helpers. It runs in the kserve venv
(`make bench-venvs`), never in the project venv:

    python tests/bench/kserve_boosters.py --library xgboost --model_name m --model_dir DIR --http_port P
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import kserve  # type: ignore[import-not-found,unused-ignore]
from kserve.utils.utils import (  # type: ignore[import-not-found,unused-ignore]
    get_predict_input,
    get_predict_response,
)

SUFFIXES = {"xgboost": (".bst", ".json", ".ubj"), "lightgbm": (".bst", ".txt")}


class BoosterModel(kserve.Model):  # type: ignore[misc,unused-ignore]
    def __init__(self, name: str, model_dir: Path, library: str, nthread: int) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.library = library
        self.nthread = nthread
        self.ready = False
        self._booster: Any = None  # an xgboost.Booster or a lightgbm.Booster

    def load(self) -> bool:
        files = [p for p in self.model_dir.iterdir() if p.is_file() and p.suffix in SUFFIXES[self.library]]
        if len(files) != 1:
            raise RuntimeError(f"want exactly one model file in {self.model_dir}, found {files}")
        if self.library == "xgboost":
            import xgboost

            self._booster = xgboost.Booster(params={"nthread": self.nthread}, model_file=str(files[0]))
        else:
            import lightgbm

            self._booster = lightgbm.Booster(params={"num_threads": self.nthread}, model_file=str(files[0]))
        self.ready = True
        return self.ready

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        if self.library == "xgboost":
            import xgboost

            instances = get_predict_input(payload)
            result = self._booster.predict(xgboost.DMatrix(instances, nthread=self.nthread))
        else:
            instances = get_predict_input(payload, columns=self._booster.feature_name())
            result = self._booster.predict(instances)
        return get_predict_response(payload, result, self.name)


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", type=Path, required=True)
    parser.add_argument("--library", choices=sorted(SUFFIXES), required=True)
    parser.add_argument("--nthread", type=int, default=1)
    args, _ = parser.parse_known_args()
    model = BoosterModel(args.model_name, args.model_dir, args.library, args.nthread)
    model.load()
    kserve.ModelServer().start([model])


if __name__ == "__main__":
    main()
