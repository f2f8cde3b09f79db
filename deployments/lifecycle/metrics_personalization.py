"""Online metrics of policy (personalization) versions: the rewards of the strategies a version
chose.

A turn gets up to two rewards, one per source: ``explicit`` (the learner's rating through
/v1/feedback) and ``answer`` (1 when the answer to the turn's exercise was correct, else 0).
``mean_reward`` pools both, each reward one observation, because both are what the policy
learns from; ``by_source`` shows them apart, since a shift in the mix of sources moves the
pooled mean without any change in the policy.

A shadow policy's choices were never shown, so its value is estimated off-policy by inverse
propensity scoring from the served turns' rewards: a reward counts, weighted by 1/propensity of
the served choice, when the shadow chose the strategy that was served. With the shadow's own
(sampled) choice this is unbiased for the shadow's value, noisy when propensities are small.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from deployments.lifecycle.outcomes import Delta, Outcomes, make_delta, served_version
from deployments.lifecycle.stats import (
    MeanEstimate,
    Proportion,
    mean_estimate,
    welch_greater,
    wilson,
)
from store.records import RewardRecord

MODEL = "personalization"


class PersonalizationMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["personalization"] = "personalization"
    turns: int = Field(description="Turns this version chose for (served) or shadowed.")
    rewards: int = Field(0, description="Rewards of those turns, both sources.")
    mean_reward: MeanEstimate | None = Field(
        None, description="Served: mean of every reward, explicit and answer sources pooled."
    )
    by_source: dict[str, MeanEstimate] = Field(default_factory=dict)
    agreement: dict[str, Proportion] = Field(
        default_factory=dict,
        description="Shadow only, per served version: share of turns it chose the served strategy.",
    )
    ips_value: MeanEstimate | None = Field(
        None, description="Shadow only: IPS estimate of its mean reward (sources pooled)."
    )
    served_value: MeanEstimate | None = Field(
        None,
        description="Shadow only: the served mean reward on the same rewards, to read "
        "ips_value against.",
    )


def _rewards_by_turn(outcomes: Outcomes) -> dict[str, list[RewardRecord]]:
    by_turn: dict[str, list[RewardRecord]] = {}
    for reward, _ in outcomes.rewards:
        by_turn.setdefault(reward.turn_id, []).append(reward)
    return by_turn


def served(outcomes: Outcomes) -> dict[str, PersonalizationMetrics]:
    turns: dict[str, int] = {}
    for turn in outcomes.turns:
        version = served_version(turn, MODEL)
        if version is not None:
            turns[version] = turns.get(version, 0) + 1
    values: dict[str, dict[str, list[float]]] = {v: {} for v in turns}
    for reward, turn in outcomes.rewards:
        version = served_version(turn, MODEL)
        if version is not None:
            values[version].setdefault(reward.source, []).append(reward.reward)
    reports = {}
    for version, by_source in values.items():
        pooled = [r for source in sorted(by_source) for r in by_source[source]]
        reports[version] = PersonalizationMetrics(
            turns=turns[version],
            rewards=len(pooled),
            mean_reward=mean_estimate(pooled),
            by_source={s: mean_estimate(r) for s, r in sorted(by_source.items())},
        )
    return reports


def shadow(outcomes: Outcomes) -> dict[str, PersonalizationMetrics]:
    rewards = _rewards_by_turn(outcomes)
    turns: dict[str, int] = {}
    agreed: dict[str, dict[str, list[bool]]] = {}
    ips: dict[str, list[float]] = {}
    logged: dict[str, list[float]] = {}
    for output in outcomes.shadows:
        strategy = output.output.get("strategy")
        if output.model != MODEL or strategy is None:
            continue
        version = output.version
        turn = outcomes.by_turn[output.turn_id]
        turns[version] = turns.get(version, 0) + 1
        match = strategy == turn.strategy
        agreed.setdefault(version, {}).setdefault(output.served_version, []).append(match)
        if turn.propensity <= 0:  # cannot be reweighted; never logged by a working policy
            continue
        for reward in rewards.get(turn.turn_id, []):
            ips.setdefault(version, []).append(reward.reward / turn.propensity if match else 0.0)
            logged.setdefault(version, []).append(reward.reward)
    return {
        version: PersonalizationMetrics(
            turns=n,
            rewards=len(logged.get(version, [])),
            agreement={v: wilson(sum(a), len(a)) for v, a in sorted(agreed[version].items())},
            ips_value=mean_estimate(ips.get(version, [])),
            served_value=mean_estimate(logged.get(version, [])),
        )
        for version, n in turns.items()
    }


def value(metrics: PersonalizationMetrics) -> MeanEstimate | None:
    """A version's mean reward: observed when it served, estimated (IPS) when it shadowed."""
    return metrics.mean_reward if metrics.mean_reward is not None else metrics.ips_value


def compare(
    champion: PersonalizationMetrics | None,
    candidate: PersonalizationMetrics | None,
    *,
    champion_version: str,
    alpha: float,
) -> list[Delta]:
    """Mean reward, Welch's one-sided t (H1: the candidate's is lower). For a shadow the
    candidate's is its IPS estimate, whose spread the test takes as it is."""
    if champion is None or candidate is None:
        return []
    champion_value, candidate_value = value(champion), value(candidate)
    p_value = (
        # H1: the champion's mean is greater than the candidate's.
        welch_greater(candidate_value, champion_value)
        if champion_value is not None and candidate_value is not None
        else None
    )
    metric = "mean_reward" if candidate.mean_reward is not None else "mean_reward_ips"
    deltas = [make_delta(metric, champion_value, candidate_value, True, p_value, "welch t", alpha)]
    agreement = candidate.agreement.get(champion_version)
    if agreement is not None:
        deltas.append(make_delta("strategy_agreement", None, agreement, None, None, "", alpha))
    return deltas
