"""Turning feedback and answers into rewards for the strategy a turn chose.

Used by the ingress (an answer sent with the next /v1/tutor message; feedback replayed from the
outbox) and by the personalization deployment (/v1/feedback), so every path records rewards the
same way, once per turn and source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from models.common.registry import ArtifactNotFoundError, ModelRegistry
from models.personalization.context import CONTEXT_DIM
from models.personalization.policy_version import MODEL_NAME, PolicyVersion
from store import FeedbackRecord, RewardRecord, TurnRecord, TutorStore
from store.records import AnswerRecord

UNAVAILABLE_POLICY = "unavailable"  # a turn whose strategy was the uniform fallback


class PolicyStatistics:
    """Which bandit statistics a turn's policy version learns into (its ``policy.json``)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry
        self._known: dict[str, str] = {}  # registered versions never change: cache them

    def __call__(self, version: str) -> str:
        if version not in self._known:
            try:
                path = self._registry.load(MODEL_NAME, version).path
                self._known[version] = PolicyVersion.from_artifact(path).statistics
            except ArtifactNotFoundError:
                # Turns from before policies were versioned name their statistics directly
                # ("lin_ts_v1"); not cached, so a version registered later is still found.
                return version
        return self._known[version]


def reward_turn(
    store: TutorStore,
    turn: TurnRecord,
    *,
    source: Literal["explicit", "answer"],
    reward: float,
    now: float,
    statistics: Callable[[str], str],
) -> bool:
    """Record the reward; the statistics of the policy version that chose the turn's strategy
    learn from it (``statistics(version)``: a ``PolicyStatistics``).

    The reward is kept even when no policy can learn from it (a fallback choice, or a context
    from another feature set), so profiles and off-policy logs still see it. False when this
    turn already has a reward from this source.
    """
    version = turn.model_versions.get("personalization", UNAVAILABLE_POLICY)
    learnable = version != UNAVAILABLE_POLICY and len(turn.context) == CONTEXT_DIM
    return store.add_reward(
        RewardRecord(
            turn_id=turn.turn_id,
            learner_id=turn.learner_id,
            source=source,
            policy=statistics(version) if learnable else version,
            strategy=turn.strategy,
            reward=reward,
            ts=now,
        ),
        context=turn.context if learnable else None,
    )


def apply_feedback(
    store: TutorStore,
    turn: TurnRecord,
    feedback: FeedbackRecord,
    *,
    statistics: Callable[[str], str],
) -> tuple[bool, FeedbackRecord]:
    """Store the feedback (one per turn) and apply what the stored one says: its reward and its
    answer (with the reward that answer earns). Whether this call stored it, and the stored one.

    Each step is idempotent on its own key (feedback per turn, reward per turn and source, answer
    per source id), and they run from the stored feedback, not the one given: a second call
    (a client's retry, the outbox's replay) completes an apply that a failure cut short, and
    never applies anything twice or applies a later, different feedback.
    """
    accepted = store.add_feedback(feedback)
    stored = store.get_feedback(turn.turn_id) or feedback
    if stored.reward is not None:
        reward_turn(
            store,
            turn,
            source="explicit",
            reward=stored.reward,
            now=stored.ts,
            statistics=statistics,
        )
    if stored.item_id is not None and stored.skill_id is not None and stored.correct is not None:
        store.add_answer(
            AnswerRecord(
                learner_id=turn.learner_id,
                source_id=f"{turn.turn_id}:feedback",
                item_id=stored.item_id,
                skill_id=stored.skill_id,
                correct=stored.correct,
                ts=stored.ts,
            )
        )
        reward_turn(
            store,
            turn,
            source="answer",
            reward=float(stored.correct),
            now=stored.ts,
            statistics=statistics,
        )
    return accepted, stored
