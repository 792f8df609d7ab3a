"""The pull benchmark's pure pieces: round order, medians, ratios against the targets, the table."""

from __future__ import annotations

import dataclasses
import hashlib

from tests.bench import pull
from tests.bench.pull import SHARDED, SINGLE, Sample
from tests.support.s3 import RandomSource

GIB = 1 << 30


def sample(case: str, method: str, seconds: float, rss_mib: int = 50, server: float | None = 1.0) -> Sample:
    return Sample(
        case=case,
        method=method,
        seconds=seconds,
        bytes=GIB if case == SINGLE else 2 * GIB,
        client_cpu=0.5,
        server_cpu=server,
        others_cpu=0.2,
        window_seconds=2.0,
        peak_rss_kib=rss_mib * 1024,
    )


def test_each_method_goes_first_in_turn() -> None:
    orders = [pull.rotated(pull.METHODS, r) for r in range(4)]
    assert [o[0] for o in orders] == ["raw GET", "download_file", "pull", "raw GET"]
    assert all(sorted(o) == sorted(pull.METHODS) for o in orders)


def test_ratios_use_the_median_of_the_rounds_and_the_targets_of_the_issue() -> None:
    samples = [
        sample(SINGLE, "raw GET", 1.0),  # 1024 MiB/s
        sample(SINGLE, "raw GET", 2.0),  # 512
        sample(SINGLE, "raw GET", 1.0),
        sample(SINGLE, "pull", 1.1),  # 931
        sample(SINGLE, "pull", 1.1),
        sample(SINGLE, "pull", 1.1),
        sample(SHARDED, "raw GET", 2.0),
        sample(SHARDED, "pull", 2.0),
    ]
    found = {(r.label.split(":")[0], "download_file" in r.label): r for r in pull.ratios(samples)}
    assert set(found) == {(SINGLE, False), (SHARDED, False)}  # no download_file samples: no ratio to it
    single = found[SINGLE, False]
    assert abs(single.value - 1 / 1.1) < 1e-9
    assert single.target == ">= 0.9x"
    assert single.met
    sharded = found[SHARDED, False]
    assert sharded.value == 1.0
    assert sharded.target == ">= 1x"
    assert sharded.met


def test_a_pull_below_the_target_is_missed() -> None:
    samples = [
        sample(SINGLE, "raw GET", 1.0),
        sample(SINGLE, "pull", 2.0),
        sample(SINGLE, "download_file", 1.5),
    ]
    ratios = pull.ratios(samples)
    assert [r.met for r in ratios] == [False, False]
    assert [round(r.value, 3) for r in ratios] == [0.5, 0.75]


def test_round_ratios_pair_each_rounds_runs() -> None:
    samples = [
        sample(SINGLE, "raw GET", 1.0),
        sample(SINGLE, "pull", 2.0),
        sample(SINGLE, "raw GET", 2.0),
        sample(SINGLE, "pull", 2.0),
    ]
    assert pull.round_ratios(samples, SINGLE) == [0.5, 1.0]


def test_table_has_a_row_per_artifact_and_method_with_peak_rss_and_cpu_per_gib() -> None:
    samples = [
        sample(SHARDED, "pull", 2.0, rss_mib=90),
        sample(SHARDED, "pull", 4.0, rss_mib=120),
        sample(SHARDED, "raw GET", 2.0, server=None),
    ]
    lines = pull.markdown_table(samples).splitlines()
    assert len(lines) == 4
    raw_row, pull_row = lines[2], lines[3]
    assert raw_row.startswith(f"| {SHARDED} | raw GET | 1,024 |")
    assert "| n/a |" in raw_row  # no server pid, no server CPU
    # Median of 1024 and 512 MiB/s; CPU 1.0 s over 4 GiB; the larger peak RSS.
    assert pull_row == f"| {SHARDED} | pull | 768 | 1,024, 512 | 0.25 | 0.50 | 0.10 | 120 |"


def test_random_source_hashes_what_it_hands_out() -> None:
    source = RandomSource(10_000)
    parts = [source.read(4096), source.read(4096), source.read(4096), source.read()]
    data = b"".join(parts)
    assert [len(p) for p in parts] == [4096, 4096, 1808, 0]
    assert source.sha.hexdigest() == hashlib.sha256(data).hexdigest()


def test_cpu_bound_ceiling_is_the_ratio_of_cpu_per_gib() -> None:
    raw = dataclasses.replace(sample(SINGLE, "raw GET", 1.0), client_cpu=0.25, server_cpu=1.25)
    pulled = dataclasses.replace(sample(SINGLE, "pull", 2.0), client_cpu=2.0, server_cpu=1.0)
    [line] = pull.cpu_bound_lines([raw, pulled, sample(SHARDED, "raw GET", 1.0, server=None)])
    assert "raw GET 1.50 s, pull 3.00 s" in line
    assert line.endswith("can reach 0.50x the raw GET")


def test_hash_ceiling_adds_one_sha256_of_every_byte_to_the_raw_gets_cpu() -> None:
    # raw GET: 0.5 s client + 1.0 s server per GiB; sha256 at 1024 MiB per CPU second adds 1 s/GiB.
    samples = [sample(SINGLE, "raw GET", 1.0), sample(SHARDED, "raw GET", 1.0, server=None)]
    [line] = pull.hash_ceiling_lines(samples, 1024.0)
    assert line.startswith(f"- {SINGLE}:")
    assert "at most 0.60x" in line  # 1.5 / (1.5 + 1.0)
    assert pull.hash_ceiling_lines(samples, 0.0) == []
