"""`make bench-profile`: where our runtime spends its time under the benchmark's load.

Serves one workload with our runtime pinned to one core, drives it with wrk on the other, and
samples every process of the server with py-spy meanwhile; prints the hottest frames and keeps
py-spy's raw output (for flame graphs) in the work directory.

    python -m tests.bench.runtime_profile --runtime-python P --py-spy P --work-dir DIR \\
        --workload "RF 100x20 v2" --concurrency 64 [--unbatched]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.bench import harness, servers
from tests.bench.models import make_models, workloads
from tests.bench.runtime import LOAD_CPU, LUA_SCRIPT, BenchError, check_predictions, running


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runtime-python", type=Path, required=True)
    parser.add_argument("--py-spy", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument(
        "--workload", default="LR iris v2", help='"LR iris v1", "LR iris v2" or "RF 100x20 v2"'
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="sampling time")
    parser.add_argument("--unbatched", action="store_true", help="profile our run with batching off")
    parser.add_argument("--top", type=int, default=30)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    by_label = {w.label: w for w in workloads(make_models(args.work_dir / "models"))}
    if args.workload not in by_label:
        print(f"--workload must be one of {', '.join(by_label)}", file=sys.stderr)
        return 2
    workload = by_label[args.workload]
    bodies = args.work_dir / "bodies" / f"{workload.model.name}-{workload.protocol}.txt"
    bodies.parent.mkdir(parents=True, exist_ok=True)
    bodies.write_text(harness.bodies_text(workload.protocol, workload.model.rows.tolist()))
    spec = servers.modelplane(args.runtime_python, workload.model, batching=not args.unbatched)
    stem = f"profile-{spec.name}-{workload.model.name}-{workload.protocol}-c{args.concurrency}"
    raw_path = args.work_dir / f"{stem}.raw"
    url = spec.url(spec.infer_paths[workload.protocol])
    wrk_seconds = args.seconds + 4
    wrk = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{args.concurrency}", f"-d{wrk_seconds:g}s"]
    wrk += ["--timeout", "10s", "-s", str(LUA_SCRIPT), url, "--", str(bodies)]
    try:
        with running(spec, args.work_dir / f"{stem}.log") as pid:
            check_predictions(spec, workload.model, workload.protocol)
            load = subprocess.Popen(wrk, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(2)  # past the connection ramp-up
            spy = [str(args.py_spy), "record", "--pid", str(pid), "--subprocesses", "--nonblocking"]
            spy += [
                "--duration",
                f"{args.seconds:g}",
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(raw_path),
            ]
            subprocess.run(spy, check=True, capture_output=True, timeout=args.seconds + 60)
            output, _ = load.communicate(timeout=wrk_seconds + 60)
    except (BenchError, subprocess.CalledProcessError) as error:
        print(f"profiling failed: {error}", file=sys.stderr)
        return 1
    result = harness.parse_wrk_output(output)
    print(
        f"{spec.name} {workload.label} c={args.concurrency}: {result.requests_per_second:,.0f} req/s, ",
        end="",
    )
    print(f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms (under py-spy, which slows it)")
    print("\n".join(harness.profile_summary(raw_path.read_text(), args.top)))
    print(f"raw samples: {raw_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
