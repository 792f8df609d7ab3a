"""The benchmark's pure pieces: request bodies, wrk's summary line, ratios. No server, no timing."""

from __future__ import annotations

import json

import pytest

from tests.bench import harness
from tests.bench.harness import OURS, OURS_UNBATCHED, Measurement, WrkResult

WRK_STDOUT = """Running 6s test @ http://127.0.0.1:40000/v2/models/lr-iris/infer
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms  300.00us   9.00ms   90.00%
  12000 requests in 6.00s, 2.10MB read
Requests/sec:   2000.00
BENCH_RESULT requests=12000 duration_us=6000000 p50_us=1100.0 p99_us=4200.5 mean_us=1200.3 \
status=2 connect=0 read=1 write=0 timeout=0
"""


def test_v1_body_is_one_instance_per_line() -> None:
    body = harness.request_body("v1", [5.1, 3, 1.4, 0.2])
    assert "\n" not in body
    assert json.loads(body) == {"instances": [[5.1, 3.0, 1.4, 0.2]]}


def test_v2_body_is_one_fp64_row() -> None:
    body = json.loads(harness.request_body("v2", [1.5, -2.0]))
    assert body == {"inputs": [{"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [1.5, -2.0]}]}


def test_a_text_row_is_a_string_in_v1_and_a_bytes_tensor_in_v2() -> None:
    assert json.loads(harness.request_body("v1", "good film")) == {"instances": ["good film"]}
    tensor = json.loads(harness.request_body("v2", "good film"))["inputs"][0]
    assert tensor == {"name": harness.V2_INPUT_NAME, "shape": [1], "datatype": "BYTES", "data": ["good film"]}


def test_bodies_text_has_a_line_per_row_and_refuses_repeats() -> None:
    text = harness.bodies_text("v2", [[1.0, 2.0], [3.0, 4.0]])
    assert [json.loads(line)["inputs"][0]["data"] for line in text.splitlines()] == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(ValueError, match="distinct rows"):
        harness.bodies_text("v1", [[1.0], [1.0]])


def test_predictions_of_reads_both_protocols() -> None:
    assert harness.predictions_of("v1", {"predictions": [2]}) == [2]
    v2 = {"outputs": [{"name": "predict", "shape": [1, 1], "datatype": "INT64", "data": [[1]]}]}
    assert harness.predictions_of("v2", v2) == [1]
    with pytest.raises(ValueError, match="no predictions in the v2 response"):
        harness.predictions_of("v2", {"error": "no model"})


def test_parse_wrk_output_reads_the_lua_summary_line() -> None:
    result = harness.parse_wrk_output(WRK_STDOUT)
    assert result == WrkResult(
        requests=12000, duration_s=6.0, p50_ms=1.1, p99_ms=4.2005, mean_ms=1.2003, errors=3
    )
    assert result.requests_per_second == 2000.0


def test_parse_wrk_output_without_the_line_says_why() -> None:
    with pytest.raises(ValueError, match="no BENCH_RESULT line"):
        harness.parse_wrk_output("Requests/sec: 10\n")


def _m(workload: str, server: str, concurrency: int, rps: float, p50: float, p99: float) -> Measurement:
    return Measurement(workload, server, concurrency, WrkResult(int(rps * 5), 5.0, p50, p99, p50, 0))


def test_throughput_ratio_is_against_the_fastest_alternative_and_p99_against_the_lowest() -> None:
    measurements = [
        _m("LR", "mlserver", 8, 500, 10, 30),
        _m("LR", "kserve", 8, 1000, 5, 40),
        _m("LR", OURS, 8, 3500, 2, 20),
    ]
    speed, p99 = harness.throughput_ratios(measurements, "LR", 3, [8])
    assert speed.value == pytest.approx(3.5)
    assert speed.met
    assert "kserve" in speed.label
    assert p99.value == pytest.approx(20 / 30)
    assert p99.met


def test_batching_cost_compares_our_two_runs_at_concurrency_one() -> None:
    measurements = [_m("RF", OURS, 1, 100, 11.5, 20), _m("RF", OURS_UNBATCHED, 1, 110, 10.0, 15)]
    cost = harness.batching_cost(measurements, "RF")
    assert cost is not None
    assert cost.value == pytest.approx(0.15)
    assert not cost.met
    assert harness.ratio_lines([cost])[0].endswith("(target <= 10% extra: MISSED)")


def test_combine_sums_counts_and_takes_median_percentiles() -> None:
    runs = [
        WrkResult(100, 1.0, 1.0, 5.0, 1.0, 0),
        WrkResult(300, 1.0, 3.0, 9.0, 2.0, 1),
        WrkResult(200, 1.0, 2.0, 7.0, 1.5, 0),
    ]
    combined = harness.combine(runs)
    assert (combined.requests, combined.duration_s, combined.errors) == (600, 3.0, 1)
    assert (combined.p50_ms, combined.p99_ms) == (2.0, 7.0)
    assert combined.mean_ms == pytest.approx((100 * 1.0 + 300 * 2.0 + 200 * 1.5) / 600)


def test_batching_cost_prefers_the_interleaved_runs() -> None:
    label = harness.interleaved("LR")
    measurements = [
        _m("LR", OURS, 1, 100, 2.0, 5),
        _m("LR", OURS_UNBATCHED, 1, 100, 1.0, 5),
        _m(label, OURS, 1, 100, 1.05, 5),
        _m(label, OURS_UNBATCHED, 1, 100, 1.0, 5),
    ]
    cost = harness.batching_cost(measurements, "LR")
    assert cost is not None
    assert cost.value == pytest.approx(0.05)
    assert cost.met
    assert cost.label.startswith(label)


def test_profile_summary_counts_self_and_total_per_function() -> None:
    raw = (
        "main (app.py:1);handle (app.py:10);decode (codecs.py:5) 3\n"
        "main (app.py:1);handle (app.py:12);predict (model.py:7) 5\n"
        "main (app.py:2) 2\n"
        "not a sample line"
    )
    lines = harness.profile_summary(raw, top=3)
    assert lines[0] == "10 samples"
    assert lines[1:4] == ["self:", "   50.0%  predict (model.py)", "   30.0%  decode (codecs.py)"]
    assert "  100.0%  main (app.py)" in lines
    assert "   80.0%  handle (app.py)" in lines


def test_overhead_lines_compare_each_path_with_the_baseline_at_each_concurrency() -> None:
    def result(requests: int, p50: float, p99: float) -> WrkResult:
        return WrkResult(requests=requests, duration_s=1.0, p50_ms=p50, p99_ms=p99, mean_ms=p50, errors=0)

    measurements = [
        Measurement("w", "direct", 8, result(1000, 2.0, 10.0)),
        Measurement("w", "envoy", 8, result(800, 2.5, 12.0)),
        Measurement("w", "envoy", 1, result(300, 1.0, 2.0)),  # no baseline at c=1: no line
    ]
    assert harness.overhead_lines(measurements, "w", "direct", ["envoy", "missing"], [1, 8]) == [
        "- c=8 envoy / direct: req/s **0.80x**, p50 +0.50 ms (2.00 -> 2.50), p99 +2.00 ms (10.00 -> 12.00)"
    ]


def test_a_ratio_without_a_target_is_shown_without_a_verdict() -> None:
    lines = harness.ratio_lines(
        [harness.Ratio("c=4", 1.25, harness.NO_TARGET, True), harness.Ratio("c=16", 2.0, ">= 3x", False)]
    )
    assert lines == ["- c=4: **1.25x**", "- c=16: **2.00x** (target >= 3x: MISSED)"]
