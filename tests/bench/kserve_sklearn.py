"""A scikit-learn model on KServe's Python ModelServer, as KServe's own sklearnserver serves one.

KServe publishes sklearnserver as an image, not on PyPI, so the benchmark carries this equivalent
(joblib file from --model_dir, predict on the decoded input, KServe's own input/output helpers).
It runs in the kserve venv (`make bench-venvs`), never in the project venv:

    python tests/bench/kserve_sklearn.py --model_name m --model_dir DIR --http_port P
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped,unused-ignore]
import kserve  # type: ignore[import-not-found,unused-ignore]
from kserve.utils.utils import (  # type: ignore[import-not-found,unused-ignore]
    get_predict_input,
    get_predict_response,
)

MODEL_SUFFIXES = (".joblib", ".pkl", ".pickle")


class SklearnModel(kserve.Model):  # type: ignore[misc,unused-ignore]
    def __init__(self, name: str, model_dir: Path) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.ready = False

    def load(self) -> bool:
        files = [p for p in self.model_dir.iterdir() if p.is_file() and p.suffix in MODEL_SUFFIXES]
        if len(files) != 1:
            raise RuntimeError(f"want exactly one model file in {self.model_dir}, found {files}")
        self._model = joblib.load(files[0])
        self.ready = True
        return self.ready

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        instances = get_predict_input(payload)
        return get_predict_response(payload, self._model.predict(instances), self.name)


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", type=Path, required=True)
    args, _ = parser.parse_known_args()
    model = SklearnModel(args.model_name, args.model_dir)
    model.load()
    kserve.ModelServer().start([model])


if __name__ == "__main__":
    main()
