"""Live outcomes joined to the turns whose model versions they judge.

Labels arrive after the turn: a learner answers the exercise a turn set either with
/v1/feedback on that turn (answer source_id "<T>:feedback") or with their next /v1/tutor message
(source_id "<T>:answer", sent with turn T: it answers the exercise of the learner's turn just
before T). Rewards name their turn directly. This module does the joining once, so each model's
metrics (metrics_difficulty, metrics_emotion, metrics_personalization) only score.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from deployments.lifecycle.stats import Interval, MeanEstimate, Proportion
from store.records import AnswerRecord, RewardRecord, ShadowOutputRecord, TurnRecord

# What a turn's model_versions says when the stage failed and a fallback answered: no version
# of the model served it, so no version's metrics count it.
UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Label:
    """A learner's answer to an exercise a turn set."""

    turn: TurnRecord
    item_id: str
    skill_id: str
    correct: bool
    ts: float


@dataclass
class Outcomes:
    """Turns in the window with what followed them."""

    turns: list[TurnRecord]
    by_turn: dict[str, TurnRecord]
    # One label per (turn, item): the first answer. An answer sent with /v1/feedback and again
    # with the next message is one outcome, not two.
    labels: list[Label]
    # The first answer to each turn's exercise: "what follows" a turn, for the emotion model.
    next_answer: dict[str, Label]
    rewards: list[tuple[RewardRecord, TurnRecord]]
    shadows: list[ShadowOutputRecord]
    unlinked_answers: int = 0  # answers whose turn is outside the window (or unknown)
    unlinked_rewards: int = 0


def served_version(turn: TurnRecord, model: str) -> str | None:
    """The version of ``model`` that served the turn; None when a fallback did."""
    version = turn.model_versions.get(model)
    return None if version in (None, UNAVAILABLE) else version


def _answered_turn(
    answer: AnswerRecord,
    by_turn: dict[str, TurnRecord],
    learner_turns: dict[str, list[TurnRecord]],
    learner_ts: dict[str, list[float]],
    position: dict[str, int],
) -> TurnRecord | None:
    turn_id, _, kind = answer.source_id.rpartition(":")
    if kind == "feedback":
        turn = by_turn.get(turn_id)
        return turn if turn is not None and turn.learner_id == answer.learner_id else None
    if kind != "answer":
        return None
    own = learner_turns.get(answer.learner_id, [])
    sent_with = by_turn.get(turn_id)
    if sent_with is not None and sent_with.learner_id == answer.learner_id:
        index = position[turn_id]
        return own[index - 1] if index > 0 else None
    # Turn T itself was not stored (the store failed during it): the previous turn is the
    # learner's latest one before the answer arrived.
    index = bisect.bisect_right(learner_ts.get(answer.learner_id, []), answer.ts)
    candidates = [t for t in own[:index] if t.turn_id != turn_id]
    return candidates[-1] if candidates else None


def join(
    turns: Iterable[TurnRecord],
    answers: Iterable[AnswerRecord],
    rewards: Iterable[RewardRecord],
    shadows: Iterable[ShadowOutputRecord] = (),
) -> Outcomes:
    """Link answers and rewards to the turns (of the window) they judge.

    ``turns`` oldest first, as the store yields them. An answer or reward whose turn is not
    among ``turns`` is dropped and counted: it judges a turn before the window, whose version
    the window is not about.
    """
    turns = list(turns)
    by_turn = {t.turn_id: t for t in turns}
    learner_turns: dict[str, list[TurnRecord]] = {}
    for turn in sorted(turns, key=lambda t: t.ts):  # stable: ties keep the store's order
        learner_turns.setdefault(turn.learner_id, []).append(turn)
    learner_ts = {learner: [t.ts for t in own] for learner, own in learner_turns.items()}
    position = {t.turn_id: i for own in learner_turns.values() for i, t in enumerate(own)}

    labels: list[Label] = []
    next_answer: dict[str, Label] = {}
    seen: set[tuple[str, str]] = set()
    unlinked = 0
    for answer in sorted(answers, key=lambda a: a.ts):
        turn = _answered_turn(answer, by_turn, learner_turns, learner_ts, position)
        if turn is None:
            unlinked += 1
            continue
        label = Label(turn, answer.item_id, answer.skill_id, answer.correct, answer.ts)
        next_answer.setdefault(turn.turn_id, label)
        if (turn.turn_id, answer.item_id) not in seen:
            seen.add((turn.turn_id, answer.item_id))
            labels.append(label)

    joined: list[tuple[RewardRecord, TurnRecord]] = []
    unlinked_rewards = 0
    for reward in rewards:
        turn = by_turn.get(reward.turn_id)
        if turn is None:
            unlinked_rewards += 1
        else:
            joined.append((reward, turn))
    shadows = [s for s in shadows if s.turn_id in by_turn]
    return Outcomes(
        turns=turns,
        by_turn=by_turn,
        labels=labels,
        next_answer=next_answer,
        rewards=joined,
        shadows=shadows,
        unlinked_answers=unlinked,
        unlinked_rewards=unlinked_rewards,
    )


class Delta(BaseModel):
    """One metric of a candidate against the champion."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="strings")

    metric: str
    champion: float | None
    candidate: float | None
    delta: float | None  # candidate - champion
    higher_is_better: bool | None  # None where neither direction is "worse" (a distance)
    p_value: float | None = None  # one-sided, H1: the candidate is worse; None: no test
    test: str = ""  # the test behind p_value
    worse: bool = False  # p_value < alpha
    n_champion: int = 0
    n_candidate: int = 0


Estimate = MeanEstimate | Interval | Proportion


def value_of(estimate: Estimate | None) -> float | None:
    if estimate is None:
        return None
    if isinstance(estimate, MeanEstimate):
        return estimate.mean
    return estimate.share if isinstance(estimate, Proportion) else estimate.value


def make_delta(
    metric: str,
    champion: Estimate | None,
    candidate: Estimate | None,
    higher_is_better: bool | None,
    p_value: float | None,
    test: str,
    alpha: float,
) -> Delta:
    """A Delta from two estimates (either may be missing) and a one-sided p-value."""
    a, b = value_of(champion), value_of(candidate)
    difference = b - a if a is not None and b is not None else None
    return Delta(
        metric=metric,
        champion=a,
        candidate=b,
        delta=difference if difference is None or math.isfinite(difference) else None,
        higher_is_better=higher_is_better,
        p_value=p_value,
        test=test if p_value is not None else "",
        worse=p_value is not None and p_value < alpha,
        n_champion=champion.n if champion else 0,
        n_candidate=candidate.n if candidate else 0,
    )
