"""Prometheus metrics of the request graph (exported by Ray's metrics agent).

Part of the Serve edge: the deployment classes create these and hand them to the Serve-free
code as observers (``TutorService``, ``ProviderRouter``), which never imports Ray.
"""

from __future__ import annotations

from ray.serve import metrics

from deployments.schemas import TutorResponse
from models.llm.router import Usage

LATENCY_BUCKETS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000]


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
            boundaries=LATENCY_BUCKETS_MS,
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

    def record_turn(self, response: TutorResponse, *, stream: bool) -> None:
        outcome = "degraded" if response.degraded else "ok"
        self.turns.inc(tags={"outcome": outcome, "stream": str(stream)})
        for stage, ms in response.timings_ms.items():
            self.stage_latency.observe(ms, tags={"stage": stage})
        self.states.inc(tags={"state": response.learner_state.emotion.state})
        self.strategies.inc(tags={"strategy": response.strategy.name})
        for entry in response.degraded:
            self.degraded.inc(tags={"stage": entry.split(":", 1)[0]})


_BREAKER_STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}


class RouterMetrics:
    """Per LLM provider: calls by outcome, time to first token, tokens, cost, breaker state."""

    def __init__(self) -> None:
        self.requests = metrics.Counter(
            "tutor_llm_requests_total",
            description="Calls to LLM providers (and skips), by outcome.",
            tag_keys=("provider", "outcome"),
        )
        self.ttft = metrics.Histogram(
            "tutor_llm_time_to_first_token_ms",
            description="Time from a provider call to its first token.",
            boundaries=LATENCY_BUCKETS_MS,
            tag_keys=("provider",),
        )
        self.tokens = metrics.Counter(
            "tutor_llm_tokens_total",
            description="Tokens sent and received, as the provider counted them or estimated "
            "(about 4 characters a token) where it reports none: see counted_by.",
            tag_keys=("provider", "direction", "counted_by"),
        )
        self.cost = metrics.Counter(
            "tutor_llm_cost_total",
            description="Spend from the tokens and the configured prices per 1k tokens.",
            tag_keys=("provider",),
        )
        self.breaker = metrics.Gauge(
            "tutor_llm_breaker_state",
            description="Circuit breaker per provider: 0 closed, 1 half open, 2 open.",
            tag_keys=("provider",),
        )

    def record_call(
        self,
        provider: str,
        outcome: str,
        *,
        ttft_ms: float | None = None,
        usage: Usage | None = None,
    ) -> None:
        tags = {"provider": provider}
        self.requests.inc(tags={**tags, "outcome": outcome})
        if ttft_ms is not None:
            self.ttft.observe(ttft_ms, tags=tags)
        if usage is None:
            return
        counted = {**tags, "counted_by": usage.counted_by}
        for direction, tokens in (("input", usage.input_tokens), ("output", usage.output_tokens)):
            if tokens:
                self.tokens.inc(tokens, tags={**counted, "direction": direction})
        if usage.cost:
            self.cost.inc(usage.cost, tags=tags)

    def record_breaker(self, provider: str, state: str) -> None:
        self.breaker.set(_BREAKER_STATE_VALUE[state], tags={"provider": provider})


class OutboxMetrics:
    """Writes the store could not take, journaled and replayed (deployments/tutoring/durable.py)."""

    def __init__(self) -> None:
        self.depth = metrics.Gauge(
            "tutor_outbox_depth",
            description="Writes waiting in this ingress replica's outbox for the store.",
        )
        self.writes = metrics.Counter(
            "tutor_outbox_writes_total",
            description="Writes journaled in the outbox (queued) and applied from it "
            "(replayed), by kind (turn, feedback).",
            tag_keys=("kind", "event"),
        )

    def queued(self, kind: str, depth: int) -> None:
        self.writes.inc(tags={"kind": kind, "event": "queued"})
        self.depth.set(depth)

    def replayed(self, kind: str, depth: int) -> None:
        self.writes.inc(tags={"kind": kind, "event": "replayed"})
        self.depth.set(depth)


class AdmissionMetrics:
    """Requests the ingress refused under load (deployments/tutoring/admission.py)."""

    def __init__(self) -> None:
        self.refused_total = metrics.Counter(
            "tutor_requests_shed_total",
            description="Model requests refused by the ingress, per pool (turns, predictions): "
            "full or expected_wait (503 at once), waited (503 after max_wait_s without a place), "
            "timed_out (408).",
            tag_keys=("pool", "reason"),
        )

    def observer(self, pool: str):
        """What a pool's ``Admission`` calls with each refusal's reason."""
        return lambda reason: self.refused_total.inc(tags={"pool": pool, "reason": reason})
