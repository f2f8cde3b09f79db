"""Turning feedback and answers into rewards for the strategy a turn chose.

Used by the ingress (an answer sent with the next /v1/tutor message) and by the personalization
deployment (/v1/feedback), so both paths record rewards the same way, once per turn and source.
"""

from __future__ import annotations

from typing import Literal

from models.personalization.context import CONTEXT_DIM
from store import RewardRecord, TurnRecord, TutorStore

UNAVAILABLE_POLICY = "unavailable"  # a turn whose strategy was the uniform fallback


def reward_turn(
    store: TutorStore,
    turn: TurnRecord,
    *,
    source: Literal["explicit", "answer"],
    reward: float,
    now: float,
) -> bool:
    """Record the reward; the policy that chose the turn's strategy learns from it.

    The reward is kept even when no policy can learn from it (a fallback choice, or a context
    from another feature set), so profiles and off-policy logs still see it. False when this
    turn already has a reward from this source.
    """
    policy = turn.model_versions.get("personalization", UNAVAILABLE_POLICY)
    learnable = policy != UNAVAILABLE_POLICY and len(turn.context) == CONTEXT_DIM
    return store.add_reward(
        RewardRecord(
            turn_id=turn.turn_id,
            learner_id=turn.learner_id,
            source=source,
            policy=policy,
            strategy=turn.strategy,
            reward=reward,
            ts=now,
        ),
        context=turn.context if learnable else None,
    )
