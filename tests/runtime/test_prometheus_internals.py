"""The one reach into prometheus_client's private fields (metrics.add_to_histogram) still adds up.

The runtime gathers observations between flushes and adds them to a histogram in whole counts, which
prometheus_client has no public call for. If an upgrade renames or reshapes the fields it uses, this
fails, before a /metrics page could show wrong numbers.
"""

from __future__ import annotations

from importlib.metadata import version

import pytest
from modelplane_runtime.metrics import LATENCY_BUCKETS, _PendingHistogram, add_to_histogram
from prometheus_client import CollectorRegistry, Histogram

OBSERVATIONS = (0.0001, 0.0005, 0.003, 0.003, 0.2, 0.25, 7.0, 11.0, 42.0)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram("latency_seconds", "test", ["model"], buckets=LATENCY_BUCKETS, registry=registry)


def samples(registry: CollectorRegistry) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


def test_flushed_counts_equal_observing_one_at_a_time() -> None:
    observed, flushed = CollectorRegistry(), CollectorRegistry()
    reference = histogram(observed).labels("m")
    pending = _PendingHistogram(LATENCY_BUCKETS)
    target = histogram(flushed).labels("m")
    for value in OBSERVATIONS:
        reference.observe(value)
        pending.observe(value)
    pending.flush_into(target)
    pending.flush_into(target)  # nothing new: adds nothing

    expected = samples(observed)
    assert expected[("latency_seconds_count", (("model", "m"),))] == len(OBSERVATIONS)
    assert samples(flushed) == expected, f"prometheus_client {version('prometheus_client')} changed"


def test_a_count_per_bucket_is_required() -> None:
    target = histogram(CollectorRegistry()).labels("m")
    with pytest.raises(ValueError, match="bucket counts"):
        add_to_histogram(target, [1, 2], 3.0)
