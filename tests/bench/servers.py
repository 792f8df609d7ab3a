"""How to start each server under test on a model, and where to send its requests.

Every server gets free loopback ports of its own (other work on this machine serves on the usual
8080), its best configuration for one core (no access log), and the same batching window where it
batches: at most 64 rows, 5 ms.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import modelplane_contract as contract

from tests.bench.harness import (
    FLOOR,
    KSERVE,
    MLSERVER,
    MLSERVER_BATCHING,
    OURS,
    OURS_OPTIMIZED,
    OURS_UNBATCHED,
    Protocol,
)
from tests.bench.models import BenchModel
from tests.support.net import LOOPBACK, free_port

HOST = LOOPBACK
MAX_BATCH_SIZE = 64
MAX_BATCH_MS = 5
BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent.parent


@dataclass(frozen=True)
class ServerSpec:
    name: str
    argv: list[str]
    port: int
    ready_path: str
    infer_paths: dict[Protocol, str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO_ROOT

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"


#: MLServer's runtime for each format (mlserver-sklearn, mlserver-xgboost, mlserver-lightgbm).
MLSERVER_IMPLEMENTATIONS = {
    "sklearn": "mlserver_sklearn.SKLearnModel",
    "xgboost": "mlserver_xgboost.XGBoostModel",
    "lightgbm": "mlserver_lightgbm.LightGBMModel",
}


def _v2_paths(model: str) -> dict[Protocol, str]:
    return {"v2": f"/v2/models/{model}/infer"}


def floor(python: Path) -> ServerSpec:
    port = free_port()
    argv = [str(python), "-m", "uvicorn", "tests.bench.floor_app:app", "--host", HOST, "--port", str(port)]
    argv += ["--lifespan", "off", "--no-access-log", "--log-level", "warning"]
    paths: dict[Protocol, str] = {"v1": "/", "v2": "/"}
    return ServerSpec(FLOOR, argv, port, "/", paths)


def mlserver(
    python: Path, model: BenchModel, run_dir: Path, batching: bool, parallel_workers: int
) -> ServerSpec:
    """``mlserver start`` on a repository of one model; settings as MLServer's docs describe them."""
    port = free_port()
    repository = run_dir / "repository"
    (repository / model.name).mkdir(parents=True, exist_ok=True)
    settings = {
        "debug": False,  # its default True turns on access logs
        "host": HOST,
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "metrics_dir": str(run_dir / "metrics"),
        "parallel_workers": parallel_workers,
    }
    model_settings: dict[str, object] = {
        "name": model.name,
        "implementation": MLSERVER_IMPLEMENTATIONS[model.format],
        "parameters": {"uri": str(model.artifact)},
    }
    if batching:
        model_settings |= {"max_batch_size": MAX_BATCH_SIZE, "max_batch_time": MAX_BATCH_MS / 1000}
    (repository / "settings.json").write_text(json.dumps(settings))
    (repository / model.name / "model-settings.json").write_text(json.dumps(model_settings))
    argv = [str(python), "-m", "mlserver.cli.main", "start", str(repository)]
    name = MLSERVER_BATCHING if batching else MLSERVER
    return ServerSpec(name, argv, port, f"/v2/models/{model.name}/ready", _v2_paths(model.name), cwd=run_dir)


def kserve(python: Path, model: BenchModel) -> ServerSpec:
    """Our copy of KServe's sklearnserver (tests/bench/kserve_sklearn.py), or of its xgbserver and
    lgbserver (tests/bench/kserve_boosters.py), on kserve's ModelServer."""
    port = free_port()
    if model.format == "sklearn":
        argv = [str(python), str(BENCH_DIR / "kserve_sklearn.py")]
    else:
        argv = [str(python), str(BENCH_DIR / "kserve_boosters.py"), "--library", model.format]
    argv += ["--model_name", model.name]
    argv += ["--model_dir", str(model.directory), "--http_port", str(port), "--grpc_port", str(free_port())]
    # Its fastest setup: no per-request latency or access log lines, and no FastAPIDeprecationWarning
    # printed per request (newer FastAPI warns about KServe's ORJSONResponse, and sklearn's warning
    # filters reset the registry that would print it once).
    argv += ["--workers", "1", "--enable_latency_logging", "false", "--configure_logging", "false"]
    paths: dict[Protocol, str] = {"v1": f"/v1/models/{model.name}:predict", **_v2_paths(model.name)}
    env = {"PYTHONWARNINGS": "ignore"}
    return ServerSpec(KSERVE, argv, port, f"/v2/models/{model.name}/ready", paths, env=env)


def modelplane(
    python: Path, model: BenchModel, batching: bool, optimized_dir: Path | None = None
) -> ServerSpec:
    """``modelplane-runtime serve``: one worker (the server has one core), the joblib file allowed;
    on ``optimized_dir`` (see :func:`optimized`) it serves the ONNX form the optimize step left there."""
    port = free_port()
    command = Path(python).parent / contract.RUNTIME_COMMAND
    argv = [
        str(command),
        contract.SERVE_SUBCOMMAND,
        "--model-dir",
        str(optimized_dir or model.directory),
        "--format",
        model.format,
    ]
    argv += ["--name", model.name, "--host", HOST, "--http-port", str(port), "--grpc-port", str(free_port())]
    env = {
        contract.ENV_ALLOW_PICKLE: "true",
        contract.ENV_WORKERS: "1",
        contract.ENV_BATCHING: "true" if batching else "false",
        contract.ENV_MAX_BATCH_SIZE: str(MAX_BATCH_SIZE),
        contract.ENV_MAX_LATENCY_MS: str(MAX_BATCH_MS),
    }
    paths: dict[Protocol, str] = {"v1": f"/v1/models/{model.name}:predict", **_v2_paths(model.name)}
    name = OURS_OPTIMIZED if optimized_dir else OURS if batching else OURS_UNBATCHED
    return ServerSpec(name, argv, port, f"/v2/models/{model.name}/ready", paths, env=env)


def optimized(python: Path, model: BenchModel, root: Path) -> tuple[Path, dict[str, object]]:
    """A copy of the model's directory after `modelplane-runtime optimize` with onnx: true (what
    the model-optimize init container does in a pod), and the step's report."""
    directory = root / f"{model.name}-onnx"
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(model.directory, directory)
    command = Path(python).parent / contract.RUNTIME_COMMAND
    log = directory.parent / f"{model.name}-onnx.termination-log"
    log.write_text("")
    subprocess.run(
        [str(command), contract.OPTIMIZE_SUBCOMMAND, "--model-dir", str(directory), "--format", model.format,
         "--allow-pickle", "true", "--settings", json.dumps({"onnx": True}), "--termination-log", str(log)],
        check=True, capture_output=True,
    )  # fmt: skip
    reason, _, body = log.read_text().strip().partition(": ")
    report: dict[str, object] = {"result": reason, **json.loads(body)}
    if reason != contract.REASON_OPTIMIZED:
        raise RuntimeError(f"the optimize step did not optimize {model.name}: {report}")
    return directory, report


def this_python() -> Path:
    return Path(sys.executable)
