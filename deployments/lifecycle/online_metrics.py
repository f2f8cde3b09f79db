"""What each version of a model did on live traffic: serving (requests, errors, latency) and
outcomes (the online metrics of metrics_difficulty, metrics_emotion, metrics_personalization),
with counts and 95% intervals, and a candidate's comparison with the champion.

``build_report`` is the computation, a function of lists of records; ``model_report`` only reads
them from the store. The `tutor` command and the guardrail both call ``model_report`` with
``since`` = when the canary or shadow started, so every version is judged on the same period.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from deployments.lifecycle import metrics_difficulty, metrics_emotion, metrics_personalization
from deployments.lifecycle.metrics_difficulty import DifficultyMetrics
from deployments.lifecycle.metrics_emotion import EmotionMetrics
from deployments.lifecycle.metrics_personalization import PersonalizationMetrics
from deployments.lifecycle.outcomes import Delta, Outcomes, join, make_delta
from deployments.lifecycle.rollout import MODELS
from deployments.lifecycle.serving_stats import VersionServing, summarize
from deployments.lifecycle.stats import proportion_greater
from store.base import TutorStore
from store.records import (
    AnswerRecord,
    RewardRecord,
    ServingStatsRecord,
    ShadowOutputRecord,
    TurnRecord,
)

Metrics = Annotated[
    DifficultyMetrics | EmotionMetrics | PersonalizationMetrics, Field(discriminator="kind")
]


@dataclass(frozen=True)
class _ModelMetrics:
    """How one model's versions are scored: registered per model, so nothing below branches
    on a model's name."""

    served: Callable[[Outcomes], dict[str, Any]]
    shadow: Callable[[Outcomes], dict[str, Any]]
    compare: Callable[..., list[Delta]]
    against_champion: Callable[[Any, Any], None] | None = None


METRICS: dict[str, _ModelMetrics] = {
    "difficulty": _ModelMetrics(
        metrics_difficulty.served, metrics_difficulty.shadow, metrics_difficulty.compare
    ),
    "emotion": _ModelMetrics(
        metrics_emotion.served,
        metrics_emotion.shadow,
        metrics_emotion.compare,
        metrics_emotion.against_champion,
    ),
    "personalization": _ModelMetrics(
        metrics_personalization.served,
        metrics_personalization.shadow,
        metrics_personalization.compare,
    ),
}
assert set(METRICS) == set(MODELS), "every model needs its online metrics"


class VersionReport(BaseModel):
    """One version over the report's period."""

    model_config = ConfigDict(extra="forbid")

    version: str
    serving: VersionServing | None = Field(
        None, description="Requests, errors and latency from the replicas' serving stats."
    )
    served: Metrics | None = Field(None, description="Outcomes of the turns this version served.")
    shadow: Metrics | None = Field(
        None,
        description="Set when this version ran as a shadow: its outputs on turns another "
        "version served, scored on the same outcomes.",
    )

    @property
    def outcomes(self) -> Metrics | None:
        """The metrics that judge this version: served ones when it served, else its shadow's."""
        return self.served if self.served is not None else self.shadow


class ModelReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    since: float | None
    generated_at: float
    champion: str | None = Field(None, description="The version TV distances are measured to.")
    versions: dict[str, VersionReport]
    unlinked_answers: int = Field(
        0, description="Answers in the period to turns before it (not counted)."
    )
    unlinked_rewards: int = Field(
        0, description="Rewards in the period of turns before it (not counted)."
    )


def build_report(
    model: str,
    *,
    turns: Iterable[TurnRecord],
    answers: Iterable[AnswerRecord],
    rewards: Iterable[RewardRecord] = (),
    shadows: Iterable[ShadowOutputRecord] = (),
    serving: Iterable[ServingStatsRecord] = (),
    since: float | None = None,
    champion: str | None = None,
    now: float | None = None,
) -> ModelReport:
    """Every version of ``model`` seen in these records (serving stats, served turns or shadow
    outputs), with its metrics. ``champion`` (optional) adds each other version's distances to
    it where the model has them (emotion's state distribution)."""
    scoring = _scoring(model)
    outcomes = join(turns, answers, rewards, [s for s in shadows if s.model == model])
    serving_by_version = summarize(r for r in serving if r.model == model)
    served = scoring.served(outcomes)
    shadowed = scoring.shadow(outcomes)
    versions = {
        version: VersionReport(
            version=version,
            serving=serving_by_version.get(version),
            served=served.get(version),
            shadow=shadowed.get(version),
        )
        for version in sorted(set(serving_by_version) | set(served) | set(shadowed))
    }
    base = served.get(champion) if champion else None
    if scoring.against_champion is not None and base is not None:
        for version, report in versions.items():
            if version != champion and report.outcomes is not None:
                scoring.against_champion(report.outcomes, base)
    return ModelReport(
        model=model,
        since=since,
        generated_at=time.time() if now is None else now,
        champion=champion,
        versions=versions,
        unlinked_answers=outcomes.unlinked_answers,
        unlinked_rewards=outcomes.unlinked_rewards,
    )


def model_report(
    store: TutorStore, model: str, since: float | None, *, champion: str | None = None
) -> ModelReport:
    """``build_report`` over what the store holds from ``since`` on (everything when None)."""
    _scoring(model)  # an unknown model fails before any read
    return build_report(
        model,
        turns=store.iter_turns(since=since),
        answers=store.iter_answers(since=since),
        rewards=store.iter_rewards(since=since),
        shadows=store.iter_shadow_outputs(model, since=since),
        serving=store.serving_stats(model, since=since),
        since=since,
        champion=champion,
    )


class Comparison(BaseModel):
    """A candidate against the champion over one report's period."""

    # "ignore", not "forbid": the dump carries the computed `worse`, and must read back.
    model_config = ConfigDict(extra="ignore")

    model: str
    champion: str
    candidate: str
    candidate_source: Literal["served", "shadow"] | None = Field(
        None,
        description="Whether the candidate's outcomes come from turns it served or from "
        "its shadow outputs; None when it has neither.",
    )
    alpha: float
    deltas: list[Delta]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def worse(self) -> bool:
        """Some metric is worse for the candidate with one-sided significance alpha."""
        return any(d.worse for d in self.deltas)

    def delta(self, metric: str) -> Delta | None:
        return next((d for d in self.deltas if d.metric == metric), None)


def compare(
    report: ModelReport, champion: str, candidate: str, *, alpha: float = 0.05
) -> Comparison:
    """Serving and outcome deltas (candidate - champion), each with a one-sided p-value for
    "the candidate is worse" where a test applies (see each model's ``compare`` for which)."""
    base = report.versions.get(champion) or VersionReport(version=champion)
    other = report.versions.get(candidate) or VersionReport(version=candidate)
    deltas = _serving_deltas(base.serving, other.serving, alpha)
    deltas += _scoring(report.model).compare(
        base.served, other.outcomes, champion_version=champion, alpha=alpha
    )
    source = "served" if other.served is not None else "shadow" if other.shadow else None
    return Comparison(
        model=report.model,
        champion=champion,
        candidate=candidate,
        candidate_source=source,
        alpha=alpha,
        deltas=deltas,
    )


def _serving_deltas(
    champion: VersionServing | None, candidate: VersionServing | None, alpha: float
) -> list[Delta]:
    if champion is None or candidate is None:
        return []
    a, b = champion.error_rate_ci, candidate.error_rate_ci
    p_value = proportion_greater(a, b) if a and b else None
    deltas = [make_delta("error_rate", a, b, False, p_value, "two-proportion z", alpha)]
    for metric in ("p50_ms", "p99_ms"):
        mine, theirs = getattr(champion, metric), getattr(candidate, metric)
        difference = None
        if mine is not None and theirs is not None:
            difference = 0.0 if theirs == mine else theirs - mine  # both past 60 s: no change
        deltas.append(
            Delta(
                metric=metric,
                champion=mine,
                candidate=theirs,
                delta=difference,
                higher_is_better=False,
                n_champion=champion.requests,
                n_candidate=candidate.requests,
            )
        )
    return deltas


def _scoring(model: str) -> _ModelMetrics:
    try:
        return METRICS[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; models: {', '.join(MODELS)}") from None
