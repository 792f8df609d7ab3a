"""Pure pieces of `make bench-llm`: one request's timings, a level's summary, the table and ratios.

Kept free of I/O so that the unit tests check them cheaply (tests/bench/test_llm_stats.py); the
driver that starts the servers and sends the requests is tests/bench/llm.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from tests.bench.harness import NO_TARGET, Ratio

OURS = "modelplane"
LLAMA_CPP_SERVER = "llama_cpp.server"
# make bench-llm-vllm: the same vLLM image and arguments, through a ModelDeployment's Service or as a
# plain pod asked at its own address.
VLLM_DEPLOYMENT = "vllm, ModelDeployment"
VLLM_DIRECT = "vllm, direct pod"
VLLM_TARGET = 0.95  # issue 12: our vLLM deployment within 5% of vLLM started directly


@dataclass
class RequestTiming:
    """What the client saw of one request, in seconds of one monotonic clock.

    ``token_times`` are the arrival times of the streamed chunks that carry text (one token each
    on both servers); a whole (non-streamed) answer has none and counts ``usage`` tokens instead.
    """

    started: float
    finished: float = 0.0
    token_times: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        return self.token_times[0] - self.started if self.token_times else None

    @property
    def inter_token(self) -> list[float]:
        return [
            later - earlier for earlier, later in zip(self.token_times, self.token_times[1:], strict=False)
        ]


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: with 16 samples, p99 is the slowest one)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class LevelResult:
    workload: str
    server: str
    concurrency: int
    requests: int
    errors: int
    tokens: int
    wall_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    itl_p50_s: float
    itl_p99_s: float
    e2e_p50_s: float
    e2e_p99_s: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0


def summarize(workload: str, server: str, concurrency: int, timings: Sequence[RequestTiming]) -> LevelResult:
    """Tokens/s over the level's wall time (first request sent to last answer read); latency
    percentiles over the requests that succeeded."""
    return summarize_rounds(workload, server, concurrency, [timings])


def wall_time(timings: Sequence[RequestTiming]) -> float:
    """First request sent to last answer read."""
    return max((t.finished for t in timings), default=0.0) - min((t.started for t in timings), default=0.0)


def summarize_rounds(
    workload: str, server: str, concurrency: int, rounds: Sequence[Sequence[RequestTiming]]
) -> LevelResult:
    """One level measured in several rounds (taking turns with another server): tokens/s over the
    rounds' summed wall times (the time between rounds, when the other server ran, left out);
    latency percentiles over every request of every round that succeeded."""
    timings = [timing for round_ in rounds for timing in round_]
    done = [t for t in timings if t.error is None]
    ttfts = [ttft for t in done if (ttft := t.ttft) is not None]
    gaps = [gap for t in done for gap in t.inter_token]
    wall = sum(wall_time(round_) for round_ in rounds)
    return LevelResult(
        workload=workload,
        server=server,
        concurrency=concurrency,
        requests=len(timings),
        errors=len(timings) - len(done),
        tokens=sum(t.completion_tokens for t in done),
        wall_s=wall,
        ttft_p50_s=percentile(ttfts, 0.50),
        ttft_p99_s=percentile(ttfts, 0.99),
        itl_p50_s=percentile(gaps, 0.50),
        itl_p99_s=percentile(gaps, 0.99),
        e2e_p50_s=percentile([t.finished - t.started for t in done], 0.50),
        e2e_p99_s=percentile([t.finished - t.started for t in done], 0.99),
    )


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:,.0f}"


def markdown_table(results: Sequence[LevelResult]) -> str:
    lines = [
        (
            "| workload | server | conc. | requests | tokens/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms "
            "| ITL p99 ms | e2e p50 ms | e2e p99 ms | errors |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines.extend(
        f"| {r.workload} | {r.server} | {r.concurrency} | {r.requests} | {r.tokens_per_second:.1f} "
        f"| {_ms(r.ttft_p50_s)} | {_ms(r.ttft_p99_s)} | {_ms(r.itl_p50_s)} | {_ms(r.itl_p99_s)} "
        f"| {_ms(r.e2e_p50_s)} | {_ms(r.e2e_p99_s)} | {r.errors} |"
        for r in results
    )
    return "\n".join(lines)


def _find(results: Sequence[LevelResult], workload: str, server: str, concurrency: int) -> LevelResult | None:
    return next(
        (r for r in results if (r.workload, r.server, r.concurrency) == (workload, server, concurrency)), None
    )


def ratios(results: Sequence[LevelResult], workload: str) -> list[Ratio]:
    """Issue 12's targets, ours over llama_cpp.server on one workload: at concurrency 16 at least 3x
    the tokens/s with a lower p99 TTFT (streamed workloads), at concurrency 1 within 10%."""
    found: list[Ratio] = []
    for concurrency, target in ((1, 0.9), (4, None), (16, 3.0)):
        ours = _find(results, workload, OURS, concurrency)
        theirs = _find(results, workload, LLAMA_CPP_SERVER, concurrency)
        if ours is None or theirs is None or not theirs.tokens_per_second:
            continue
        value = ours.tokens_per_second / theirs.tokens_per_second
        label = (
            f"{workload} c={concurrency}: tokens/s {ours.tokens_per_second:.1f} vs "
            f"{theirs.tokens_per_second:.1f}"
        )
        met = value >= target and ours.errors == 0 if target is not None else ours.errors == 0
        found.append(Ratio(label, value, f">= {target:g}x" if target else NO_TARGET, met))
        if concurrency == 16 and not math.isnan(ours.ttft_p99_s) and not math.isnan(theirs.ttft_p99_s):
            found.append(
                Ratio(
                    f"{workload} c=16: TTFT p99 {_ms(ours.ttft_p99_s)} ms vs {_ms(theirs.ttft_p99_s)} ms",
                    ours.ttft_p99_s / theirs.ttft_p99_s,
                    "< 1",
                    ours.ttft_p99_s < theirs.ttft_p99_s,
                )
            )
    return found


def vllm_ratios(results: Sequence[LevelResult], workload: str) -> list[Ratio]:
    """Issue 12's target for vLLM, the deployment over the direct pod on one workload at each level:
    tokens/s at least 0.95x, and TTFT p50 at most 1/0.95 of the direct pod's (streamed workloads);
    TTFT p99 shown without a target (the slowest request of a level, noisy)."""
    found: list[Ratio] = []
    for concurrency in sorted({r.concurrency for r in results if r.workload == workload}):
        ours = _find(results, workload, VLLM_DEPLOYMENT, concurrency)
        direct = _find(results, workload, VLLM_DIRECT, concurrency)
        if ours is None or direct is None or not direct.tokens_per_second:
            continue
        clean = ours.errors == 0 and direct.errors == 0
        value = ours.tokens_per_second / direct.tokens_per_second
        found.append(
            Ratio(
                f"{workload} c={concurrency}: tokens/s {ours.tokens_per_second:.1f} vs "
                f"{direct.tokens_per_second:.1f}",
                value,
                f">= {VLLM_TARGET:g}x",
                value >= VLLM_TARGET and clean,
            )
        )
        for name, mine, theirs, target in (
            ("p50", ours.ttft_p50_s, direct.ttft_p50_s, 1 / VLLM_TARGET),
            ("p99", ours.ttft_p99_s, direct.ttft_p99_s, None),
        ):
            if math.isnan(mine) or math.isnan(theirs) or not theirs:
                continue
            found.append(
                Ratio(
                    f"{workload} c={concurrency}: TTFT {name} {_ms(mine)} ms vs {_ms(theirs)} ms",
                    mine / theirs,
                    f"<= {target:.2f}x" if target else NO_TARGET,
                    clean and (target is None or mine / theirs <= target),
                )
            )
    return found
