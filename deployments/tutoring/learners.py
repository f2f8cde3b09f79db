"""/v1/learners/{id} (the learner profile) and /v1/feedback, over the store and the models."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

from deployments.schemas import (
    MAX_HISTORY,
    FeedbackRequest,
    FeedbackResponse,
    LearnerProfile,
    Pace,
)
from deployments.tutoring.exceptions import NotFoundError, required
from deployments.tutoring.history import interactions
from deployments.tutoring.turn_runner import TurnHandles
from models.emotion.learning_states import emotion_trend
from models.personalization.context import CONTEXT_DIM, learner_pace
from store import TutorStore

logger = logging.getLogger("ray.serve")
T = TypeVar("T")
PROFILE_TURNS = 200  # the newest turns a profile reads (trend, pace, latest context)


class Learners:
    def __init__(self, handles: TurnHandles, store: TutorStore, *, timeout_s: float) -> None:
        self._handles = handles
        self._store = store
        self.timeout_s = timeout_s

    async def feedback(self, body: FeedbackRequest) -> FeedbackResponse:
        """A reward and/or the answer to a turn's exercise; idempotent per turn."""
        turn = await asyncio.to_thread(self._store.get_turn, body.turn_id)
        if turn is None:
            raise NotFoundError(f"unknown turn_id {body.turn_id!r}")
        return await required(
            "personalization model",
            self._handles.personalization.feedback.remote(
                turn_id=body.turn_id,
                reward=body.reward,
                answer=body.answer.model_dump() if body.answer else None,
                now=time.time(),
            ),
            timeout_s=self.timeout_s,
        )

    async def profile(self, learner_id: str) -> LearnerProfile:
        """Mastery, emotion trend, pace and strategies; a part whose model fails is left out
        and named in ``degraded``."""
        learner = await asyncio.to_thread(self._store.get_learner, learner_id)
        if learner is None:
            raise NotFoundError(f"unknown learner_id {learner_id!r}")
        answers = await asyncio.to_thread(self._store.answers, learner_id, limit=MAX_HISTORY)
        turns = await asyncio.to_thread(self._store.recent_turns, learner_id, limit=PROFILE_TURNS)
        degraded: list[str] = []

        async def optional(name: str, call: Awaitable[T], fallback: T) -> T:
            try:
                return await asyncio.wait_for(call, timeout=self.timeout_s)
            except Exception as exc:  # the rest of the profile is still worth answering
                logger.warning("profile: %s failed: %r", name, exc)
                degraded.append(f"{name}: {type(exc).__name__}")
                return fallback

        async def preferred() -> str | None:
            contexts = [t.context for t in turns if len(t.context) == CONTEXT_DIM]
            if not contexts:
                return None
            call = self._handles.personalization.preferred.remote(
                contexts[-1], learner_id=learner_id
            )
            return await optional("personalization", call, None)

        personalization, difficulty = self._handles.personalization, self._handles.difficulty
        mastery, strategies, version, preferred_strategy = await asyncio.gather(
            optional(
                "difficulty",
                difficulty.mastery.remote(interactions(answers), learner_id=learner_id),
                [],
            ),
            optional("personalization", personalization.strategy_stats.remote(learner_id), {}),
            optional("difficulty", difficulty.model_version.remote(learner_id), "unavailable"),
            preferred(),
        )
        median_gap, sessions = learner_pace([t.ts for t in turns])
        return LearnerProfile(
            learner_id=learner_id,
            turn_count=learner.turn_count,
            answer_count=len(answers),
            created_at=learner.created_at,
            last_turn_at=learner.last_turn_at,
            mastery=mastery,
            emotion_trend=emotion_trend([t.emotion.get("states", {}) for t in turns]),
            pace=Pace(median_s_between_turns=median_gap, sessions=sessions),
            strategies=strategies,
            preferred_strategy=preferred_strategy,
            model_version=version,
            degraded=sorted(set(degraded)),
        )
