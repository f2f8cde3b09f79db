"""Online metrics of emotion versions: no label says what a learner felt, so a version is
judged on what it says and on what followed.

- the distribution of the states it predicts, and its total variation distance to the
  champion's (a new version that suddenly calls half the learners "frustrated" shows here);
- per predicted state, the share of the learner's next answers that were correct (the answer
  to that turn's exercise): a useful model's "confused" should be followed by more wrong answers
  than its "confident";
- for a shadow, how often it agrees with the version that served the same turns.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from deployments.lifecycle.outcomes import Delta, Outcomes, make_delta, served_version
from deployments.lifecycle.stats import (
    Interval,
    Proportion,
    total_variation_estimate,
    wilson,
)

MODEL = "emotion"


class EmotionMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["emotion"] = "emotion"
    turns: int = Field(description="Turns this version classified (served or shadow).")
    states: dict[str, Proportion] = Field(
        default_factory=dict, description="Share of turns per predicted state."
    )
    answers: int = Field(0, description="Of those turns, those whose exercise was answered.")
    correct_after: dict[str, Proportion] = Field(
        default_factory=dict,
        description="Per predicted state, the share of the next answers that were correct.",
    )
    agreement: dict[str, Proportion] = Field(
        default_factory=dict,
        description="Shadow only, per version that served the turns: share of the same turns "
        "on which this version predicted the served state.",
    )
    tv_to_champion: Interval | None = Field(
        None, description="Total variation distance of `states` to the champion's (bootstrap)."
    )

    def state_counts(self) -> dict[str, int]:
        return {state: share.successes for state, share in self.states.items()}


def _metrics(
    states: list[str], followed: list[tuple[str, bool]], agreed: dict[str, list[bool]]
) -> EmotionMetrics:
    counts: dict[str, int] = {}
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    after: dict[str, list[bool]] = {}
    for state, correct in followed:
        after.setdefault(state, []).append(correct)
    return EmotionMetrics(
        turns=len(states),
        states={s: wilson(c, len(states)) for s, c in sorted(counts.items())},
        answers=len(followed),
        correct_after={s: wilson(sum(c), len(c)) for s, c in sorted(after.items())},
        agreement={v: wilson(sum(a), len(a)) for v, a in sorted(agreed.items())},
    )


def served(outcomes: Outcomes) -> dict[str, EmotionMetrics]:
    states: dict[str, list[str]] = {}
    followed: dict[str, list[tuple[str, bool]]] = {}
    for turn in outcomes.turns:
        version = served_version(turn, MODEL)
        state = turn.emotion.get("state")
        if version is None or state is None:
            continue
        states.setdefault(version, []).append(state)
        answer = outcomes.next_answer.get(turn.turn_id)
        if answer is not None:
            followed.setdefault(version, []).append((state, answer.correct))
    return {v: _metrics(s, followed.get(v, []), {}) for v, s in states.items()}


def shadow(outcomes: Outcomes) -> dict[str, EmotionMetrics]:
    states: dict[str, list[str]] = {}
    followed: dict[str, list[tuple[str, bool]]] = {}
    agreed: dict[str, dict[str, list[bool]]] = {}
    for output in outcomes.shadows:
        state = output.output.get("state")
        if output.model != MODEL or state is None:
            continue
        version = output.version
        states.setdefault(version, []).append(state)
        answer = outcomes.next_answer.get(output.turn_id)
        if answer is not None:
            followed.setdefault(version, []).append((state, answer.correct))
        served_state = outcomes.by_turn[output.turn_id].emotion.get("state")
        if served_state is not None:
            agreed.setdefault(version, {}).setdefault(output.served_version, []).append(
                state == served_state
            )
    return {v: _metrics(s, followed.get(v, []), agreed.get(v, {})) for v, s in states.items()}


def against_champion(metrics: EmotionMetrics, champion: EmotionMetrics) -> None:
    """Fill in ``tv_to_champion`` (the report does this for every version but the champion)."""
    metrics.tv_to_champion = total_variation_estimate(
        metrics.state_counts(), champion.state_counts()
    )


def compare(
    champion: EmotionMetrics | None,
    candidate: EmotionMetrics | None,
    *,
    champion_version: str,
    alpha: float,
) -> list[Delta]:
    """Distances and shares, without a "worse" verdict: no outcome says which version is
    right about a learner's state, so these inform a person, not the guardrail."""
    if champion is None or candidate is None:
        return []
    tv = total_variation_estimate(candidate.state_counts(), champion.state_counts())
    deltas = [
        Delta(
            metric="state_tv_distance",
            champion=0.0,
            candidate=tv.value if tv else None,
            delta=tv.value if tv else None,
            higher_is_better=None,
            n_champion=champion.turns,
            n_candidate=candidate.turns,
        )
    ]
    agreement = candidate.agreement.get(champion_version)
    if agreement is not None:
        deltas.append(make_delta("state_agreement", None, agreement, None, None, "", alpha))
    for state in sorted(set(champion.correct_after) | set(candidate.correct_after)):
        deltas.append(
            make_delta(
                f"correct_after_{state}",
                champion.correct_after.get(state),
                candidate.correct_after.get(state),
                None,
                None,
                "",
                alpha,
            )
        )
    return deltas
