"""Serving counts: buckets, draining windows, quantiles and merging across replicas."""

import json
import math

import pytest

from deployments.lifecycle.serving_stats import (
    LATENCY_BOUNDS_MS,
    N_BUCKETS,
    ServingStats,
    VersionServing,
    bucket_of,
    quantile_ms,
    summarize,
)

from .builders import stats_record


def test_buckets_span_one_millisecond_to_a_minute_in_small_steps():
    assert LATENCY_BOUNDS_MS[0] == 1 and LATENCY_BOUNDS_MS[-1] == 60_000
    ratios = [b / a for a, b in zip(LATENCY_BOUNDS_MS, LATENCY_BOUNDS_MS[1:], strict=False)]
    assert all(1 < r <= 4 / 3 + 1e-9 for r in ratios)
    assert bucket_of(0.2) == 0 and bucket_of(1.0) == 0  # bounds are inclusive upper bounds
    assert LATENCY_BOUNDS_MS[bucket_of(1.01)] == 1.25
    assert bucket_of(60_000.1) == N_BUCKETS - 1  # overflow


def test_drain_returns_active_versions_and_resets():
    stats = ServingStats(started_at=100.0)
    stats.record("v3", 12.0, True)
    stats.record("v3", 30.0, False)
    stats.record("v4", 5.0, True)
    records = {r.version: r for r in stats.drain("emotion", "replica-a", now=110.0)}
    assert set(records) == {"v3", "v4"}
    v3 = records["v3"]
    assert (v3.model, v3.replica, v3.window_start, v3.window_end) == (
        "emotion",
        "replica-a",
        100,
        110,
    )
    assert (v3.requests, v3.errors, sum(v3.latency_counts)) == (2, 1, 2)
    assert len(v3.latency_counts) == N_BUCKETS
    assert stats.drain("emotion", "replica-a", now=120.0) == []  # reset, and idle writes nothing
    stats.record("v3", 1.0, True)
    (later,) = stats.drain("emotion", "replica-a", now=130.0)
    assert (later.window_start, later.requests) == (120.0, 1)


def test_quantile_is_the_upper_bound_of_the_bucket_holding_its_rank():
    counts = [0] * N_BUCKETS
    counts[bucket_of(10)] = 98  # 98 requests at <= 10 ms
    counts[bucket_of(100)] = 2  # 2 at <= 100 ms
    assert quantile_ms(counts, 0.5) == 10
    assert quantile_ms(counts, 0.98) == 10  # the 98th fastest
    assert quantile_ms(counts, 0.99) == 100  # the 99th fastest
    counts[-1] = 10
    assert quantile_ms(counts, 0.99) == math.inf
    assert quantile_ms([0] * N_BUCKETS, 0.5) is None


def test_summarize_merges_replicas_and_windows_per_version():
    fast, slow = [0] * N_BUCKETS, [0] * N_BUCKETS
    fast[bucket_of(8)] = 60
    slow[bucket_of(250)] = 40
    records = [
        stats_record("v3", 60, 0, fast, replica="a"),
        stats_record("v3", 40, 2, slow, replica="b"),
        stats_record("v4", 10, 1, fast[:5] + [10] + [0] * (N_BUCKETS - 6)),
    ]
    merged = summarize(records)
    v3 = merged["v3"]
    assert (v3.requests, v3.errors, v3.error_rate, v3.replicas) == (100, 2, 0.02, 2)
    assert (v3.p50_ms, v3.p99_ms) == (8, 250)
    assert v3.error_rate_ci.ci_low < 0.02 < v3.error_rate_ci.ci_high
    assert merged["v4"].error_rate == 0.1


def test_a_histogram_under_other_bounds_counts_requests_but_not_latency():
    counts = [0] * N_BUCKETS
    counts[bucket_of(20)] = 5
    merged = summarize([stats_record("v3", 5, 0, counts), stats_record("v3", 7, 1, [7, 0, 0])])
    assert (merged["v3"].requests, merged["v3"].errors, merged["v3"].p99_ms) == (12, 1, 20)


def test_a_quantile_past_a_minute_survives_json():
    counts = [0] * N_BUCKETS
    counts[-1] = 3
    serving = summarize([stats_record("v3", 3, 0, counts)])["v3"]
    again = VersionServing.model_validate(json.loads(serving.model_dump_json()))
    assert again.p99_ms == math.inf


@pytest.mark.parametrize("latency", [0.0, 1.0, 59_999.0])
def test_every_latency_lands_in_one_bucket(latency):
    stats = ServingStats(started_at=0.0)
    stats.record("v1", latency, True)
    (record,) = stats.drain("difficulty", "r", now=1.0)
    assert sum(record.latency_counts) == 1
