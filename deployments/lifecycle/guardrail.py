"""When a canary must be rolled back without anyone asking.

Four rules, each applied only when both versions have enough data (``min_requests`` for
serving, ``min_labels`` for outcomes); a rule without enough data is listed as skipped, never
read as a pass or a failure:

- error rate: the canary's exceeds the champion's by more than ``max_error_rate_increase``
  (absolute). A margin rather than a test, because an operator sets it as a budget ("at most
  two points more errors"); ``min_requests`` keeps one unlucky request from tripping it.
- p99 latency: the canary's exceeds the champion's times ``max_p99_ratio``. Both quantiles are
  bucket upper bounds (serving_stats), so they are compared on the same footing.
- difficulty log-loss: the canary's mean is higher with Welch's one-sided t-test at ``alpha``.
- personalization mean reward: the canary's is lower with Welch's one-sided t-test at ``alpha``.

A test at a small alpha is what keeps the outcome rules from rolling back a good canary on
noise: the guardrail looks every ``interval_s``, so it tests many times over a canary's life.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from deployments.lifecycle.metrics_difficulty import DifficultyMetrics
from deployments.lifecycle.metrics_personalization import PersonalizationMetrics
from deployments.lifecycle.online_metrics import ModelReport, VersionReport
from deployments.lifecycle.rollout import GuardrailConfig
from deployments.lifecycle.stats import proportion_greater, welch_greater


class GuardrailVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    champion: str
    canary: str
    rollback: bool
    reasons: list[str] = Field(
        default_factory=list, description="Why the canary is rolled back, with the figures."
    )
    checked: list[str] = Field(
        default_factory=list, description="Rules applied that the canary passed, with figures."
    )
    skipped: list[str] = Field(
        default_factory=list, description="Rules not applied, and the data they lack."
    )

    @property
    def reason(self) -> str:
        """The reasons as one sentence (the promotion history's ``reason``)."""
        return "; ".join(self.reasons)


class _Finding(NamedTuple):
    status: Literal["fired", "passed", "skipped"]
    text: str


Rule = Callable[[VersionReport, VersionReport, GuardrailConfig, str | None], _Finding | None]


def _about(model: str | None, rule_model: str, metrics: tuple, kind: type) -> bool:
    """Whether an outcome rule applies: to its model when the caller names one (so an early
    canary lists it as waiting for labels), else wherever its metrics are present."""
    if model is not None:
        return model == rule_model
    return any(isinstance(m, kind) for m in metrics)


def _fired(fired: bool, text: str) -> _Finding:
    return _Finding("fired" if fired else "passed", text)


def _short(what: str, rows: list[tuple[str, str, int]], needed: int, unit: str) -> _Finding:
    lacking = ", ".join(f"{role} {v} has {n} {unit}" for role, v, n in rows if n < needed)
    return _Finding("skipped", f"{what}: {lacking}; needs {needed} each")


def _error_rate(
    champ: VersionReport, canary: VersionReport, cfg: GuardrailConfig, model: str | None
) -> _Finding:
    a, b = champ.serving, canary.serving
    rows = [
        ("canary", canary.version, b.requests if b else 0),
        ("champion", champ.version, a.requests if a else 0),
    ]
    if any(n < cfg.min_requests for _, _, n in rows) or a is None or b is None:
        return _short("error rate", rows, cfg.min_requests, "requests")
    limit = a.error_rate + cfg.max_error_rate_increase
    p = proportion_greater(a.error_rate_ci, b.error_rate_ci)
    significant = p is not None and p < cfg.alpha
    p_text = "-" if p is None else f"{p:.2g}"
    fired = b.error_rate > limit and significant
    return _fired(
        fired,
        f"canary {canary.version} error rate {b.error_rate:.3f} {'>' if fired else '<='} "
        f"champion {a.error_rate:.3f} + {cfg.max_error_rate_increase:g} over {b.requests} "
        f"requests (champion {a.requests}; one-sided p = {p_text}"
        f"{' <' if significant else ' >='} alpha {cfg.alpha:g})",
    )


def _p99(
    champ: VersionReport, canary: VersionReport, cfg: GuardrailConfig, model: str | None
) -> _Finding:
    a, b = champ.serving, canary.serving
    rows = [
        ("canary", canary.version, b.requests if b else 0),
        ("champion", champ.version, a.requests if a else 0),
    ]
    if any(n < cfg.min_latency_requests for _, _, n in rows) or a is None or b is None:
        return _short("p99 latency", rows, cfg.min_latency_requests, "requests")
    if a.p99_ms is None or b.p99_ms is None:
        return _Finding("skipped", "p99 latency: no latency histograms")
    limit = max(a.p99_ms * cfg.max_p99_ratio, a.p99_ms + cfg.min_p99_increase_ms)
    fired = b.p99_ms > limit
    return _fired(
        fired,
        f"canary {canary.version} p99 latency {b.p99_ms:g} ms {'>' if fired else '<='} "
        f"champion {a.p99_ms:g} ms x {cfg.max_p99_ratio:g} (and + "
        f"{cfg.min_p99_increase_ms:g} ms) over {b.requests} requests (champion {a.requests})",
    )


def _worse_outcome(
    *, what: str, model_name: str, kind: type, count: str, estimate: str, higher_is_better: bool
) -> Rule:
    """A rule on an online outcome: the canary's mean ``estimate`` is worse than the
    champion's by Welch's one-sided test at ``alpha``, once both have ``min_labels``."""

    def rule(
        champ: VersionReport, canary: VersionReport, cfg: GuardrailConfig, model: str | None
    ) -> _Finding | None:
        a, b = champ.served, canary.served
        if not _about(model, model_name, (a, b), kind):
            return None
        rows = [
            (role, v.version, getattr(m, count) if isinstance(m, kind) else 0)
            for role, v, m in (("canary", canary, b), ("champion", champ, a))
        ]
        if any(n < cfg.min_labels for _, _, n in rows):
            return _short(what, rows, cfg.min_labels, count)
        ours, theirs = getattr(b, estimate), getattr(a, estimate)
        # H1: the canary is worse (a lower mean where higher is better, else a higher one).
        p = welch_greater(ours, theirs) if higher_is_better else welch_greater(theirs, ours)
        if p is None:  # unreachable with min_labels >= 10; kept so a bad config cannot crash it
            return _Finding("skipped", f"{what}: fewer than two {count}")
        fired = p < cfg.alpha
        return _fired(
            fired,
            f"canary {canary.version} {what} {ours.mean:.3f} vs champion {theirs.mean:.3f} "
            f"over {getattr(b, count)} and {getattr(a, count)} {count}: Welch one-sided "
            f"p = {p:.2g} {'<' if fired else '>='} alpha {cfg.alpha:g}",
        )

    return rule


_log_loss = _worse_outcome(
    what="log-loss",
    model_name="difficulty",
    kind=DifficultyMetrics,
    count="labels",
    estimate="log_loss",
    higher_is_better=False,
)
_reward = _worse_outcome(
    what="mean reward",
    model_name="personalization",
    kind=PersonalizationMetrics,
    count="rewards",
    estimate="mean_reward",
    higher_is_better=True,
)


RULES: tuple[Rule, ...] = (_error_rate, _p99, _log_loss, _reward)


def judge(
    champion: VersionReport,
    canary: VersionReport,
    config: GuardrailConfig,
    *,
    model: str | None = None,
) -> GuardrailVerdict:
    """Whether to roll the canary back, why, and what was checked or skipped."""
    result = GuardrailVerdict(champion=champion.version, canary=canary.version, rollback=False)
    if not config.enabled:
        result.skipped.append("guardrail disabled")
        return result
    for rule in RULES:
        finding = rule(champion, canary, config, model)
        if finding is None:
            continue
        {"fired": result.reasons, "passed": result.checked, "skipped": result.skipped}[
            finding.status
        ].append(finding.text)
    result.rollback = bool(result.reasons)
    return result


def verdict(
    *, report: ModelReport, champion: str, canary: str, config: GuardrailConfig
) -> GuardrailVerdict:
    """``judge`` for two versions of a report (``model_report`` since the canary started);
    a version the report has not seen yet has no data, so every rule is skipped for it."""
    return judge(
        report.versions.get(champion) or VersionReport(version=champion),
        report.versions.get(canary) or VersionReport(version=canary),
        config,
        model=report.model,
    )
