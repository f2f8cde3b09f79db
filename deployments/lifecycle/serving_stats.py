"""Requests, errors and latency per model version, counted in a replica and summed in the store.

Each replica counts what it served into fixed latency buckets and, every so often, drains the
counts into a ``ServingStatsRecord`` per version. Fixed buckets make windows additive: any set
of records (replicas, windows) merges by adding counts, so the `tutor` command and the guardrail
get a version's quantiles over exactly the period they ask for, which per-replica quantiles
could never give.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from deployments.lifecycle.stats import Proportion, wilson
from store.records import ServingStatsRecord


def _bounds() -> tuple[float, ...]:
    # Ten steps a decade (ratios of 1.25 to 1.33) from 1 ms to 60 s: a quantile read from a
    # bucket is within a third of the truth, fine enough for a p99 ratio of 2 to mean what it
    # says, and readable as Prometheus buckets.
    steps = (1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8)
    return tuple(
        step * decade
        for decade in (1, 10, 100, 1_000, 10_000)
        for step in steps
        if step * decade <= 60_000
    )


# Upper bounds (ms, inclusive) of the latency buckets; a record's latency_counts has one more
# entry, the overflow bucket for anything slower than 60 s.
LATENCY_BOUNDS_MS: tuple[float, ...] = _bounds()
N_BUCKETS = len(LATENCY_BOUNDS_MS) + 1


def bucket_of(latency_ms: float) -> int:
    """The index of the bucket a latency falls in (the first bound >= it; overflow last)."""
    return bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)


class _Window:
    __slots__ = ("requests", "errors", "latency_counts")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latency_counts = [0] * N_BUCKETS


class ServingStats:
    """A replica's counts per version since the last drain. Thread-safe: a replica records
    from its event loop and from worker threads."""

    def __init__(self, *, started_at: float | None = None) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._window_start = time.time() if started_at is None else started_at

    def record(self, version: str, latency_ms: float, ok: bool) -> None:
        """One call to ``version``: its latency counts whether or not it failed."""
        with self._lock:
            window = self._windows.get(version)
            if window is None:
                window = self._windows[version] = _Window()
            window.requests += 1
            window.errors += 0 if ok else 1
            window.latency_counts[bucket_of(latency_ms)] += 1

    def pending(self) -> bool:
        """Whether calls were recorded since the last drain."""
        with self._lock:
            return bool(self._windows)

    def drain(self, model: str, replica: str, now: float) -> list[ServingStatsRecord]:
        """One record per version that had requests since the last drain (none for idle
        versions, so an idle replica writes nothing), and start a new window at ``now``."""
        with self._lock:
            windows, self._windows = self._windows, {}
            start, self._window_start = self._window_start, now
        return [
            ServingStatsRecord(
                model=model,
                version=version,
                replica=replica,
                window_start=start,
                window_end=now,
                requests=window.requests,
                errors=window.errors,
                latency_counts=window.latency_counts,
            )
            for version, window in windows.items()
            if window.requests
        ]


class VersionServing(BaseModel):
    """What one version served over the records summarised.

    Quantiles are the upper bound of the bucket holding the quantile's rank (nearest rank:
    the ceil(q * n)-th fastest request), so they never understate a latency and overstate it by
    at most one bucket step (a third); ``inf`` means the quantile is past 60 s.
    """

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="strings")

    requests: int
    errors: int
    error_rate: float | None  # None without requests
    error_rate_ci: Proportion | None = None  # the error rate with its 95% Wilson interval
    p50_ms: float | None = None  # None when no record carried a latency histogram
    p99_ms: float | None = None
    replicas: int = 0


def quantile_ms(counts: list[int], q: float) -> float | None:
    """The upper bound of the bucket holding the ceil(q * n)-th smallest latency."""
    total = sum(counts)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return LATENCY_BOUNDS_MS[index] if index < len(LATENCY_BOUNDS_MS) else math.inf
    return math.inf  # unreachable: seen reaches total


def summarize(records: Iterable[ServingStatsRecord]) -> dict[str, VersionServing]:
    """Merge records (any replicas, any windows) per version. A record whose histogram has a
    different number of buckets (written under other bounds) still counts its requests and
    errors; only its latencies are left out of the quantiles."""
    requests: dict[str, int] = {}
    errors: dict[str, int] = {}
    counts: dict[str, list[int]] = {}
    replicas: dict[str, set[str]] = {}
    for record in records:
        version = record.version
        requests[version] = requests.get(version, 0) + record.requests
        errors[version] = errors.get(version, 0) + record.errors
        replicas.setdefault(version, set()).add(record.replica)
        merged = counts.setdefault(version, [0] * N_BUCKETS)
        if len(record.latency_counts) == N_BUCKETS:
            for index, count in enumerate(record.latency_counts):
                merged[index] += count
    return {
        version: VersionServing(
            requests=n,
            errors=errors[version],
            error_rate=errors[version] / n if n else None,
            error_rate_ci=wilson(errors[version], n),
            p50_ms=quantile_ms(counts[version], 0.50),
            p99_ms=quantile_ms(counts[version], 0.99),
            replicas=len(replicas[version]),
        )
        for version, n in requests.items()
    }
