"""Pure pieces of the benchmark: request bodies, wrk's summary line, the result table and ratios.

Kept free of I/O so that `make test-unit` can check them cheaply (tests/bench/test_harness.py);
the driver that starts servers and runs wrk is tests/bench/runtime.py.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Protocol = Literal["v1", "v2"]

#: The line the Lua script's done() prints; parse_wrk_output reads it back.
RESULT_MARKER = "BENCH_RESULT"
#: The input name all three servers accept for a scikit-learn model's single input.
V2_INPUT_NAME = "input-0"

FLOOR = "uvicorn-floor"
MLSERVER = "mlserver"
MLSERVER_BATCHING = "mlserver+batching"
KSERVE = "kserve"
OURS = "modelplane"
OURS_UNBATCHED = "modelplane-unbatched"
#: Ours on the model's optimized ONNX form (spec.model.optimize: onnx), made by `modelplane-runtime optimize`.
OURS_OPTIMIZED = "modelplane-onnx"
ALTERNATIVES = (MLSERVER, MLSERVER_BATCHING, KSERVE)
_LINE_NUMBER = re.compile(r":\d+\)$")


def request_body(protocol: Protocol, row: Sequence[float] | str) -> str:
    """One row as one request, in one line of JSON (the Lua script reads a body per line).

    A row is numbers, or one string (a text model's input: v1 a string, v2 a BYTES tensor).
    """
    if isinstance(row, str):
        if protocol == "v1":
            return json.dumps({"instances": [row]}, separators=(",", ":"))
        text = {"name": V2_INPUT_NAME, "shape": [1], "datatype": "BYTES", "data": [row]}
        return json.dumps({"inputs": [text]}, separators=(",", ":"))
    values = [float(value) for value in row]
    if protocol == "v1":
        return json.dumps({"instances": [values]}, separators=(",", ":"))
    tensor = {"name": V2_INPUT_NAME, "shape": [1, len(values)], "datatype": "FP64", "data": values}
    return json.dumps({"inputs": [tensor]}, separators=(",", ":"))


def bodies_text(protocol: Protocol, rows: Iterable[Sequence[float] | str]) -> str:
    """The file the Lua script cycles through: one request body per line."""
    lines = [request_body(protocol, row) for row in rows]
    if len(set(lines)) < len(lines):
        raise ValueError("request rows repeat; the benchmark needs distinct rows so no server can cache")
    return "\n".join(lines) + "\n"


def predictions_of(protocol: Protocol, response: object) -> list[object]:
    """The predicted labels of a v1 or v2 response, one per row."""
    if not isinstance(response, dict):
        raise ValueError(f"response is not a JSON object: {response!r}")
    if protocol == "v1":
        predictions = response.get("predictions")
    else:
        outputs = response.get("outputs")
        predictions = outputs[0].get("data") if isinstance(outputs, list) and outputs else None
    if not isinstance(predictions, list):
        raise ValueError(f"no predictions in the {protocol} response: {response!r}")
    # Some servers nest one list per instance; a single row's label is the same either way.
    return [p[0] if isinstance(p, list) and len(p) == 1 else p for p in predictions]


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: int  # non-2xx answers plus socket errors (connect, read, write, timeout)

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


def parse_wrk_output(text: str) -> WrkResult:
    """Read the summary line that tests/bench/wrk_rows.lua prints from its done() callback."""
    for line in text.splitlines():
        if line.startswith(RESULT_MARKER + " "):
            fields = dict(part.split("=", 1) for part in line.split()[1:])
            try:
                return WrkResult(
                    requests=int(fields["requests"]),
                    duration_s=int(fields["duration_us"]) / 1e6,
                    p50_ms=float(fields["p50_us"]) / 1e3,
                    p99_ms=float(fields["p99_us"]) / 1e3,
                    mean_ms=float(fields["mean_us"]) / 1e3,
                    errors=sum(int(fields[key]) for key in ("status", "connect", "read", "write", "timeout")),
                )
            except (KeyError, ValueError) as error:
                raise ValueError(f"malformed {RESULT_MARKER} line {line!r}: {error}") from error
    raise ValueError(f"wrk printed no {RESULT_MARKER} line (was the Lua script loaded?):\n{text}")


def combine(results: Sequence[WrkResult]) -> WrkResult:
    """Several short runs of one configuration as one: totals, and the median of each percentile."""
    if not results:
        raise ValueError("no wrk results to combine")
    requests = sum(r.requests for r in results)
    return WrkResult(
        requests=requests,
        duration_s=sum(r.duration_s for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        mean_ms=sum(r.mean_ms * r.requests for r in results) / requests if requests else 0.0,
        errors=sum(r.errors for r in results),
    )


def interleaved(workload: str) -> str:
    """The label of the concurrency-1 runs that alternate our batched and unbatched servers."""
    return f"{workload} (c=1 interleaved)"


@dataclass(frozen=True)
class Measurement:
    workload: str  # e.g. "LR iris v2"
    server: str
    concurrency: int
    result: WrkResult


def markdown_table(measurements: Sequence[Measurement]) -> str:
    lines = [
        "| workload | server | conc. | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for m in measurements:
        r = m.result
        lines.append(
            f"| {m.workload} | {m.server} | {m.concurrency} | {r.requests_per_second:,.0f} "
            f"| {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Ratio:
    label: str
    value: float
    target: str
    met: bool


def _find(
    measurements: Sequence[Measurement], workload: str, server: str, concurrency: int
) -> WrkResult | None:
    for m in measurements:
        if (m.workload, m.server, m.concurrency) == (workload, server, concurrency):
            return m.result
    return None


def throughput_ratios(
    measurements: Sequence[Measurement],
    workload: str,
    target: float,
    concurrencies: Sequence[int],
    against: Sequence[str] = ALTERNATIVES,
    server: str = OURS,
) -> list[Ratio]:
    """``server`` (ours) over the best of ``against`` in requests/s, and whether its p99 is the lower one."""
    ratios = []
    for concurrency in concurrencies:
        ours = _find(measurements, workload, server, concurrency)
        others = {s: r for s in against if (r := _find(measurements, workload, s, concurrency)) is not None}
        if ours is None or not others:
            continue
        best_server, best = max(others.items(), key=lambda item: item[1].requests_per_second)
        ratio = (
            ours.requests_per_second / best.requests_per_second if best.requests_per_second else float("inf")
        )
        lowest_p99 = min(r.p99_ms for r in others.values())
        p99s = f"{server} p99 {ours.p99_ms:.2f} ms vs lowest other {lowest_p99:.2f} ms"
        ratios.append(
            Ratio(
                label=f"{workload} c={concurrency}: {server} / {best_server} req/s",
                value=ratio,
                target=f">= {target:g}x",
                met=ratio >= target and ours.errors == 0,
            )
        )
        ratios.append(
            Ratio(
                label=f"{workload} c={concurrency}: {p99s}",
                value=ours.p99_ms / lowest_p99 if lowest_p99 else float("inf"),
                target="< 1",
                met=ours.p99_ms < lowest_p99,
            )
        )
    return ratios


def batching_cost(measurements: Sequence[Measurement], workload: str, limit: float = 0.10) -> Ratio | None:
    """At concurrency 1: how much our batched run's p50 exceeds our unbatched run's.

    Prefers the interleaved runs (both servers up, alternating), which other work on the machine
    disturbs alike, over the two sweeps minutes apart.
    """
    for label in (interleaved(workload), workload):
        batched = _find(measurements, label, OURS, 1)
        unbatched = _find(measurements, label, OURS_UNBATCHED, 1)
        if batched is not None and unbatched is not None and unbatched.p50_ms > 0:
            break
    else:
        return None
    cost = batched.p50_ms / unbatched.p50_ms - 1
    where = label if label != workload else f"{workload} c=1"
    return Ratio(
        label=f"{where}: p50 batched {batched.p50_ms:.2f} ms vs unbatched {unbatched.p50_ms:.2f} ms",
        value=cost,
        target=f"<= {limit:.0%} extra",
        met=cost <= limit,
    )


def overhead_lines(
    measurements: Sequence[Measurement],
    workload: str,
    baseline: str,
    others: Sequence[str],
    concurrencies: Sequence[int],
) -> list[str]:
    """Each of OTHERS against BASELINE at each concurrency: the req/s ratio and the added p50/p99."""
    lines = []
    for concurrency in concurrencies:
        base = _find(measurements, workload, baseline, concurrency)
        if base is None:
            continue
        for other in others:
            result = _find(measurements, workload, other, concurrency)
            if result is None:
                continue
            ratio = result.requests_per_second / base.requests_per_second if base.requests_per_second else 0.0
            lines.append(
                f"- c={concurrency} {other} / {baseline}: req/s **{ratio:.2f}x**, "
                f"p50 {result.p50_ms - base.p50_ms:+.2f} ms ({base.p50_ms:.2f} -> {result.p50_ms:.2f}), "
                f"p99 {result.p99_ms - base.p99_ms:+.2f} ms ({base.p99_ms:.2f} -> {result.p99_ms:.2f})"
                + (f", {result.errors} errors" if result.errors else "")
            )
    return lines


#: The target of a ratio that is reported without one.
NO_TARGET = "(no target)"


def ratio_lines(ratios: Iterable[Ratio]) -> list[str]:
    lines = []
    for r in ratios:
        shown = f"{r.value:+.1%}" if r.target.endswith("extra") else f"{r.value:.2f}x"
        verdict = "" if r.target == NO_TARGET else f" (target {r.target}: {'met' if r.met else 'MISSED'})"
        lines.append(f"- {r.label}: **{shown}**{verdict}")
    return lines


def profile_summary(raw: str, top: int = 25) -> list[str]:
    """py-spy's raw output (``frame;frame;... count`` per line) as the hottest frames, self and total.

    Line numbers are dropped so that one function is one entry.
    """
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    if not samples:
        return ["(no samples)"]
    lines = [f"{samples} samples", "self:"]
    lines += [f"  {100 * n / samples:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("total (the frame and what it calls):")
    lines += [f"  {100 * n / samples:5.1f}%  {frame}" for frame, n in total.most_common(top)]
    return lines


NOTES = "\n## Notes\n"


def with_notes(table: str, previous: str) -> str:
    """TABLE followed by the hand-written notes of the PREVIOUS results file (from its "## Notes")."""
    at = previous.find(NOTES)
    return table + previous[at:] if at >= 0 else table
