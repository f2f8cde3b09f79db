"""Prometheus metrics of the request graph (exported by Ray's metrics agent)."""

from __future__ import annotations

from ray.serve import metrics

_LATENCY_BUCKETS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000]


class TurnMetrics:
    """Created in the replica's constructor: Ray metrics must not be made at import time."""

    def __init__(self) -> None:
        self.turns = metrics.Counter(
            "tutor_turns_total",
            description="Tutoring turns answered, by outcome.",
            tag_keys=("outcome", "stream"),
        )
        self.stage_latency = metrics.Histogram(
            "tutor_stage_latency_ms",
            description="Latency of each stage of a tutoring turn.",
            boundaries=_LATENCY_BUCKETS_MS,
            tag_keys=("stage",),
        )
        self.states = metrics.Counter(
            "tutor_learning_state_total",
            description="Learning states detected in tutoring turns.",
            tag_keys=("state",),
        )
        self.strategies = metrics.Counter(
            "tutor_strategy_total",
            description="Teaching strategies chosen.",
            tag_keys=("strategy",),
        )
        self.degraded = metrics.Counter(
            "tutor_degraded_total",
            description="Stages that failed and were replaced by a fallback.",
            tag_keys=("stage",),
        )

    def record_turn(
        self,
        *,
        timings_ms: dict[str, float],
        state: str,
        strategy: str,
        degraded: list[str],
        stream: bool,
    ) -> None:
        self.turns.inc(tags={"outcome": "degraded" if degraded else "ok", "stream": str(stream)})
        for stage, ms in timings_ms.items():
            self.stage_latency.observe(ms, tags={"stage": stage})
        self.states.inc(tags={"state": state})
        self.strategies.inc(tags={"strategy": strategy})
        for entry in degraded:
            self.degraded.inc(tags={"stage": entry.split(":", 1)[0]})
