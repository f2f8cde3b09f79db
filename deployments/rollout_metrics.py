"""Prometheus metrics of the model lifecycle, per model version (the Serve edge of
``deployments.lifecycle``): requests, errors and latency as each replica serves them, the
online metrics its guardrail computed, and the guardrail's rollbacks."""

from __future__ import annotations

from ray.serve import metrics

from deployments.lifecycle.online_metrics import ModelReport
from deployments.lifecycle.outcomes import value_of
from deployments.telemetry import LATENCY_BUCKETS_MS


class VersionMetrics:
    """A ``deployments.lifecycle.replica.RolloutObserver``; made in the replica's constructor."""

    def __init__(self) -> None:
        self._requests = metrics.Counter(
            "tutor_model_requests_total",
            description="Calls to a model version, by role (champion, canary, requested) and "
            "outcome.",
            tag_keys=("model", "version", "role", "outcome"),
        )
        self._latency = metrics.Histogram(
            "tutor_model_latency_ms",
            description="Time a model version took to answer a call, in the replica.",
            boundaries=LATENCY_BUCKETS_MS,
            tag_keys=("model", "version"),
        )
        self._online = metrics.Gauge(
            "tutor_model_online_metric",
            description="Online metrics of a model version since the canary started, from "
            "labels that arrived later (see `tutor models status`).",
            tag_keys=("model", "version", "metric"),
        )
        self._rollbacks = metrics.Counter(
            "tutor_guardrail_rollbacks_total",
            description="Canaries ended by the guardrail.",
            tag_keys=("model", "version"),
        )

    def request(self, model: str, version: str, role: str, latency_ms: float, ok: bool) -> None:
        outcome = "ok" if ok else "error"
        tags = {"model": model, "version": version, "role": role, "outcome": outcome}
        self._requests.inc(tags=tags)
        self._latency.observe(latency_ms, tags={"model": model, "version": version})

    def rollback(self, model: str, canary: str, reasons: list[str]) -> None:
        self._rollbacks.inc(tags={"model": model, "version": canary})

    def report(self, model: str, report: ModelReport) -> None:
        for version, figures in report_gauges(report).items():
            for metric, value in figures.items():
                tags = {"model": model, "version": version, "metric": metric}
                self._online.set(value, tags=tags)


def report_gauges(report: ModelReport) -> dict[str, dict[str, float]]:
    """Per version, the figures worth a gauge: serving, then the model's online metrics and
    the count of labels behind them."""
    gauges: dict[str, dict[str, float]] = {}
    for version, entry in report.versions.items():
        figures: dict[str, float | None] = {}
        if entry.serving is not None:
            figures["requests"] = entry.serving.requests
            figures["error_rate"] = entry.serving.error_rate
            figures["p99_ms"] = entry.serving.p99_ms
        metrics = entry.outcomes
        for name in ("labels", "rewards", "turns", "answers"):
            figures[name] = getattr(metrics, name, None)
        for name in ("log_loss", "auc", "ece", "mean_reward"):
            figures[name] = value_of(getattr(metrics, name, None))
        gauges[version] = {
            k: float(v) for k, v in figures.items() if isinstance(v, int | float) and v == v
        }
    return gauges
