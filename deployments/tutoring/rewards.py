"""Turning feedback and answers into rewards for the strategy a turn chose.

Used by the ingress (an answer sent with the next /v1/tutor message) and by the personalization
deployment (/v1/feedback), so both paths record rewards the same way, once per turn and source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from models.common.registry import ArtifactNotFoundError, ModelRegistry
from models.personalization.context import CONTEXT_DIM
from models.personalization.policy_version import MODEL_NAME, PolicyVersion
from store import RewardRecord, TurnRecord, TutorStore

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
