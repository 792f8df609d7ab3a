"""`make bench-runtime`: our runtime against MLServer, KServe and the bare-uvicorn floor.

Each server runs pinned to one core and wrk to the other; every point is a short warm-up then a
measured run, one row per request, rows varied across requests. Before it is measured, each
server's answers to a sample of rows are checked against the library's own predictions.

    python -m tests.bench.runtime --runtime-python P --mlserver-python P --kserve-python P
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import typing
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import modelplane_contract as contract

from tests.bench import harness, machine, servers
from tests.bench.harness import Measurement, Protocol
from tests.bench.models import ROWS, BenchModel, Workload, make_models, workloads

SERVER_CPU = "0"
LOAD_CPU = "1"
CONCURRENCIES = (1, 8, 32, 64)
LUA_SCRIPT = servers.BENCH_DIR / "wrk_rows.lua"
CHECKED_ROWS = 40
#: Models also served through their optimized ONNX form (server harness.OURS_OPTIMIZED).
OPTIMIZED_MODELS = ("pipeline-20", "xgb-20", "lgb-20")
READY_TIMEOUT_S = 180.0
MLSERVER_PACKAGES = ("mlserver", "mlserver-sklearn", "mlserver-xgboost", "mlserver-lightgbm", "xgboost",
                     "lightgbm", "uvloop")  # fmt: skip
#: The XGBoost and LightGBM rows (the same 20 features as RF/GB; MLServer's and KServe's servers of
#: those libraries against ours, as the library and as its ONNX form).
BOOSTED = ("XGBoost 100x20 v2", "LightGBM 100x20 v2")


B = TypeVar("B", bound="Runnable")


class BenchError(Exception):
    """A server that would not start, answered wrongly, or a wrk run that failed."""


@contextlib.contextmanager
def running(spec: servers.ServerSpec, log_path: Path, cpu: str = SERVER_CPU) -> Iterator[int]:
    """Start the server pinned to CPU, wait until it is ready, stop it (its process group) after.

    Yields the server's pid (taskset execs the server in place).
    """
    env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["taskset", "-c", cpu, *spec.argv],
            cwd=spec.cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_ready(spec, process, log_path)
            yield process.pid
        finally:
            _stop(process)


def _tail(path: Path, lines: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _wait_ready(spec: servers.ServerSpec, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{spec.name} exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(spec.url(spec.ready_path), timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise BenchError(f"{spec.name} not ready after {READY_TIMEOUT_S:.0f}s:\n{_tail(log_path)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def post_json(url: str, body: str, headers: Mapping[str, str] | None = None) -> object:
    request = urllib.request.Request(
        url, body.encode(), {"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise BenchError(f"POST {url} answered {error.code}: {error.read()[:500]!r}") from error


def check_predictions(spec: servers.ServerSpec, model: BenchModel, protocol: Protocol) -> None:
    """A sample of rows, one per request: the server must answer what the library answers."""
    check_predictions_at(spec.name, spec.url(spec.infer_paths[protocol]), model, protocol)


def check_predictions_at(
    name: str, url: str, model: BenchModel, protocol: Protocol, headers: Mapping[str, str] | None = None
) -> None:
    """check_predictions for any URL (a proxy's, say) and request headers (an API key): labels
    exactly; a booster's probabilities to float32 rounding, or within the accuracy gate's default
    bounds for the optimized ONNX form, which is what it promises."""
    rows = model.rows[:CHECKED_ROWS]
    expected = model.expected(rows)
    got = [
        harness.predictions_of(protocol, post_json(url, harness.request_body(protocol, row), headers))[0]
        for row in rows
    ]
    optimized = name == harness.OURS_OPTIMIZED
    gate = (contract.GATE_MAX_ABS_ERROR, contract.GATE_MAX_REL_ERROR)
    abs_tol, rel_tol = gate if optimized else (1e-6, 1e-5)

    def same(got: object, want: object) -> bool:
        if isinstance(want, float) and isinstance(got, int | float):
            return math.isclose(got, want, rel_tol=rel_tol) or abs(got - want) <= abs_tol
        return got == want

    mismatches = [(i, g, e) for i, (g, e) in enumerate(zip(got, expected, strict=True)) if not same(g, e)]
    if mismatches:
        raise BenchError(
            f"{name} {protocol}: {len(mismatches)}/{len(rows)} predictions differ: {mismatches[:5]}"
        )


def run_wrk(
    url: str, bodies: Path, concurrency: int, seconds: float, script_args: Sequence[str] = ()
) -> harness.WrkResult:
    """SCRIPT_ARGS: what wrk_rows.lua takes after the bodies file (a request cap, headers)."""
    argv = [
        "taskset",
        "-c",
        LOAD_CPU,
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
    ]
    argv += ["-s", str(LUA_SCRIPT), url, "--", str(bodies), *script_args]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if completed.returncode != 0:
        raise BenchError(f"wrk failed ({completed.returncode}): {completed.stderr or completed.stdout}")
    return harness.parse_wrk_output(completed.stdout)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work_dir: Path = args.work_dir
        self.measurements: list[Measurement] = []
        self.failures: list[str] = []
        self.notes: list[str] = []

    def bodies_file(self, model: BenchModel, protocol: Protocol) -> Path:
        path = self.work_dir / "bodies" / f"{model.name}-{protocol}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(harness.bodies_text(protocol, model.rows.tolist()))
        return path

    def measure(self, spec: servers.ServerSpec, label: str, protocol: Protocol, bodies: Path) -> None:
        url = spec.url(spec.infer_paths[protocol])
        first_body = bodies.read_text().split("\n", 1)[0]
        for concurrency in self.args.concurrency:
            run_wrk(url, bodies, concurrency, self.args.warmup)
            # Requests the warm-up left queued would delay the measured run: wait them out.
            post_json(url, first_body)
            result = run_wrk(url, bodies, concurrency, self.args.duration)
            measurement = Measurement(label, spec.name, concurrency, result)
            self.measurements.append(measurement)
            print(harness.markdown_table([measurement]).splitlines()[-1], flush=True)

    def serve_and_measure(self, spec: servers.ServerSpec, runs: Sequence[tuple[Workload, Path]]) -> None:
        log_path = self.work_dir / "logs" / f"{spec.name}-{runs[0][0].model.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        print(f"== {spec.name}: {', '.join(w.label for w, _ in runs)}", flush=True)
        try:
            with running(spec, log_path):
                for workload, bodies in runs:
                    if spec.name != harness.FLOOR:
                        check_predictions(spec, workload.model, workload.protocol)
                    self.measure(spec, workload.label, workload.protocol, bodies)
        except BenchError as error:
            message = f"{spec.name} on {runs[0][0].model.name}: {error}"
            print(f"FAILED {message}", file=sys.stderr, flush=True)
            self.failures.append(message)

    def run(self) -> None:
        models = make_models(self.work_dir / "models")
        lr = models[0]
        selected = [w for w in workloads(models) if not self.args.workload or w.label in self.args.workload]
        bodies = {w.label: self.bodies_file(w.model, w.protocol) for w in selected}
        wanted = set(self.args.server) if self.args.server else None

        def want(name: str) -> bool:
            return wanted is None or name in wanted

        lr_v2 = next((w for w in selected if w.label == "LR iris v2"), None)
        if want(harness.FLOOR) and lr_v2 is not None:
            spec = servers.floor(self.args.runtime_python)
            self.serve_and_measure(
                spec, [(Workload("HTTP floor (fixed body)", lr, "v2"), bodies[lr_v2.label])]
            )
        for model in models:
            runs = [(w, bodies[w.label]) for w in selected if w.model is model]
            if not runs:
                continue
            v2_runs = [(w, b) for w, b in runs if w.protocol == "v2"]
            specs: list[tuple[servers.ServerSpec, list[tuple[Workload, Path]]]] = []
            for batching in (False, True):
                name = harness.MLSERVER_BATCHING if batching else harness.MLSERVER
                if want(name) and v2_runs:
                    run_dir = self.work_dir / "run" / f"{name}-{model.name}"
                    shutil.rmtree(run_dir, ignore_errors=True)
                    workers = self.args.mlserver_parallel_workers
                    spec = servers.mlserver(self.args.mlserver_python, model, run_dir, batching, workers)
                    specs.append((spec, v2_runs))
            if want(harness.KSERVE):
                specs.append((servers.kserve(self.args.kserve_python, model), runs))
            if want(harness.OURS):
                specs.append((servers.modelplane(self.args.runtime_python, model, batching=True), runs))
            if want(harness.OURS_UNBATCHED) and v2_runs:
                specs.append((servers.modelplane(self.args.runtime_python, model, batching=False), v2_runs))
            if want(harness.OURS_OPTIMIZED) and model.name in OPTIMIZED_MODELS and v2_runs:
                directory, optimize_report = servers.optimized(
                    self.args.runtime_python, model, self.work_dir / "optimized"
                )
                self.notes.append(
                    f"{harness.OURS_OPTIMIZED} on {model.name}, the optimize step's report: "
                    + json.dumps(optimize_report)
                )
                spec = servers.modelplane(
                    self.args.runtime_python, model, batching=True, optimized_dir=directory
                )
                specs.append((spec, v2_runs))
            for spec, spec_runs in specs:
                self.serve_and_measure(spec, spec_runs)
            if want(harness.OURS) and want(harness.OURS_UNBATCHED) and self.args.interleaved_rounds:
                for workload, workload_bodies in v2_runs:
                    self.interleaved_concurrency_one(workload, workload_bodies)

    def interleaved_concurrency_one(self, workload: Workload, bodies: Path) -> None:
        """Our batched and unbatched servers up together, measured in turn at concurrency 1."""
        python = self.args.runtime_python
        specs = [servers.modelplane(python, workload.model, batching) for batching in (True, False)]
        label = harness.interleaved(workload.label)
        print(f"== {label}: {', '.join(spec.name for spec in specs)}", flush=True)
        results: dict[str, list[harness.WrkResult]] = {spec.name: [] for spec in specs}
        try:
            with contextlib.ExitStack() as stack:
                for spec in specs:
                    log_path = self.work_dir / "logs" / f"{spec.name}-{workload.model.name}-interleaved.log"
                    stack.enter_context(running(spec, log_path))
                    check_predictions(spec, workload.model, workload.protocol)
                for _ in range(self.args.interleaved_rounds):
                    for spec in specs:
                        url = spec.url(spec.infer_paths[workload.protocol])
                        run_wrk(url, bodies, 1, 1)
                        results[spec.name].append(run_wrk(url, bodies, 1, self.args.interleaved_seconds))
        except BenchError as error:
            print(f"FAILED {label}: {error}", file=sys.stderr, flush=True)
            self.failures.append(f"{label}: {error}")
            return
        for spec in specs:
            measurement = Measurement(label, spec.name, 1, harness.combine(results[spec.name]))
            self.measurements.append(measurement)
            print(harness.markdown_table([measurement]).splitlines()[-1], flush=True)

    def ratios(self) -> list[harness.Ratio]:
        m = self.measurements
        ratios = harness.throughput_ratios(m, "LR iris v2", 3, [8, 32, 64])
        ratios += harness.throughput_ratios(m, "LR iris v1", 2, [8, 32, 64])
        ratios += harness.throughput_ratios(
            m, "RF 100x20 v2", 3, [32, 64], against=[harness.MLSERVER_BATCHING]
        )
        for workload in (*BOOSTED, "Pipeline scaler+LR v2", "GB 100x20 v2", "Text TF-IDF+NB v2"):
            ratios += harness.throughput_ratios(m, workload, 3, [8, 32, 64])
        # At concurrency 1, no row slower than the best alternative.
        for workload in (
            "LR iris v1",
            "LR iris v2",
            "RF 100x20 v2",
            "Pipeline scaler+LR v2",
            "GB 100x20 v2",
            "Text TF-IDF+NB v2",
            *BOOSTED,
        ):
            ratios += harness.throughput_ratios(m, workload, 1, [1])
        # The optimized ONNX form against the same pipeline served as scikit-learn: by MLServer and
        # KServe (the targets), and by ourselves (what the conversion buys).
        for workload in ("Pipeline scaler+LR v2", *BOOSTED):
            server = harness.OURS_OPTIMIZED
            ratios += harness.throughput_ratios(m, workload, 3, [8, 32, 64], server=server)
            ratios += harness.throughput_ratios(m, workload, 1, [1], server=server)
            ratios += harness.throughput_ratios(m, workload, 1, [1, 8, 32, 64], [harness.OURS], server=server)
        for workload in ("LR iris v2", "RF 100x20 v2", "Pipeline scaler+LR v2", "GB 100x20 v2", *BOOSTED):
            cost = harness.batching_cost(m, workload)
            if cost is not None:
                ratios.append(cost)
        return ratios


def _wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()
    return " ".join(first[0].split()[:2]) if first else "wrk"


def report(bench: Bench, started: datetime.datetime, load_before: str) -> str:
    args = bench.args
    load_after = machine.load_average()
    lines = [
        "# Runtime benchmark",
        "",
        f"Made by `make bench-runtime` on {started:%Y-%m-%d %H:%M} UTC at commit {machine.git_commit()}.",
        "",
        "## Machine and versions",
        "",
        f"- CPU: {machine.cpu_model()}, {os.cpu_count()} cores; kernel {platform.release()}",
        f"- Each server pinned to core {SERVER_CPU} (`taskset`), wrk (one thread) to core {LOAD_CPU}",
        (
            f"- Load average before {load_before}, after {load_after}. Other work shares this 2-core "
            "machine (builds, other tests), so numbers move by tens of percent between runs; compare "
            "within one run."
        ),
        (
            f"- {_wrk_version()}: {args.warmup:g} s warm-up then {args.duration:g} s measured per point; "
            f"one row per request, cycling through {ROWS:,} distinct rows; {CHECKED_ROWS} predictions "
            "per server and protocol checked against the estimator's own first"
        ),
        (
            f"- Batching where on: at most {servers.MAX_BATCH_SIZE} rows, {servers.MAX_BATCH_MS} ms window "
            f"(MLServer `max_batch_size`/`max_batch_time`, ours `{contract.ENV_MAX_BATCH_SIZE}`/"
            f"`{contract.ENV_MAX_LATENCY_MS}`); MLServer `parallel_workers` = "
            f"{args.mlserver_parallel_workers}, debug (access log) off; KServe one worker"
        ),
        (
            f"- Batching cost at concurrency 1: our batched and unbatched servers up together, measured in "
            f"turn, {args.interleaved_rounds} x {args.interleaved_seconds:g} s each (median p50), so that "
            "other work disturbs both alike"
        ),
        "- ours: "
        + machine.versions(args.runtime_python, "modelplane-runtime", "uvicorn", "numpy", "scikit-learn"),
        "- MLServer: " + machine.versions(args.mlserver_python, *MLSERVER_PACKAGES),
        "- KServe: "
        + machine.versions(
            args.kserve_python, "kserve", "uvicorn", "scikit-learn", "xgboost-cpu", "lightgbm"
        ),
        "- ours also: "
        + machine.versions(args.runtime_python, "xgboost-cpu", "lightgbm", "onnxruntime", "onnxmltools"),
        "",
        "## Results",
        "",
        harness.markdown_table(bench.measurements),
        "",
        "## Ratios against the targets (reported, not asserted)",
        "",
        *(harness.ratio_lines(bench.ratios()) or ["- (not enough configurations measured for ratios)"]),
    ]
    if bench.failures:
        lines += ["", "## Failures", "", *(f"- {f.splitlines()[0]}" for f in bench.failures)]
    if bench.notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in bench.notes)]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runtime-python", type=Path, required=True, help="interpreter of `make runtime-venv`"
    )
    parser.add_argument("--mlserver-python", type=Path, required=True)
    parser.add_argument("--kserve-python", type=Path, required=True)
    parser.add_argument(
        "--work-dir", type=Path, required=True, help="models, bodies, logs (outside the repo)"
    )
    parser.add_argument("--results", type=Path, help="write the markdown table here")
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per point")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCIES))
    parser.add_argument("--server", action="append", help="only these servers (repeatable)")
    parser.add_argument("--workload", action="append", help='only these workloads, e.g. "LR iris v2"')
    parser.add_argument("--mlserver-parallel-workers", type=int, default=0, help="0: in-process")
    parser.add_argument("--interleaved-rounds", type=int, default=4, help="0: skip the c=1 A/B")
    parser.add_argument("--interleaved-seconds", type=float, default=3.0)
    return parser.parse_args(argv)


class Runnable(typing.Protocol):
    failures: list[str]

    def run(self) -> None: ...


def run_and_report(bench: B, results: Path | None, report: Callable[[B, datetime.datetime, str], str]) -> int:
    """Run BENCH (wrk and taskset needed), print its report and write it to RESULTS; the exit code."""
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed; `make bench-tools` installs it", file=sys.stderr)
            return 2
    started = datetime.datetime.now(datetime.UTC)
    load_before = machine.load_average()
    bench.run()
    text = report(bench, started, load_before)
    print("\n" + text)
    if results:
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(text)
    return 1 if bench.failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_and_report(Bench(args), args.results, report)


if __name__ == "__main__":
    sys.exit(main())
