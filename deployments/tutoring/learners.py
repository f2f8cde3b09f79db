"""/v1/learners/{id} (the learner profile) and /v1/feedback, over the store and the models."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from deployments.schemas import (
    FeedbackRequest,
    FeedbackResponse,
    LearnerProfile,
    LearnerRisk,
    Pace,
)
from deployments.tutoring.durable import PendingWrites, StoreGuard, StoreUnavailable
from deployments.tutoring.exceptions import (
    NotFoundError,
    StoreUnavailableError,
    UnavailableError,
    required,
)
from deployments.tutoring.history import history_window, stored_history
from deployments.tutoring.records import risk_from_record
from deployments.tutoring.turn_runner import TurnHandles
from models.emotion.learning_states import emotion_trend
from models.personalization.context import CONTEXT_DIM, learner_pace
from store import FeedbackRecord, TurnRecord, TutorStore

logger = logging.getLogger("ray.serve")
T = TypeVar("T")
PROFILE_TURNS = 200  # the newest turns a profile reads (trend, pace, latest context)


def _owned(turn: TurnRecord, owns: Callable[[str], bool]) -> TurnRecord:
    if not owns(turn.learner_id):
        raise NotFoundError(f"unknown turn_id {turn.turn_id!r}")
    return turn


class Learners:
    def __init__(
        self,
        handles: TurnHandles,
        store: TutorStore,
        *,
        timeout_s: float,
        guard: StoreGuard | None = None,
        pending: PendingWrites | None = None,
    ) -> None:
        """``guard`` bounds the store calls of feedback in time; ``pending``: the outbox that
        takes feedback for turns still in it (without one, such feedback is a 503)."""
        self._handles = handles
        self._store = store
        self._guard = guard or StoreGuard(store, timeout_s=timeout_s)
        self._pending = pending
        self._queueing = asyncio.Lock()  # one queued feedback per turn, as the store keeps
        self.timeout_s = timeout_s

    async def feedback(
        self, body: FeedbackRequest, *, owns: Callable[[str], bool] = lambda learner_id: True
    ) -> FeedbackResponse:
        """A reward and/or the answer to a turn's exercise; idempotent per turn. ``owns``: whether
        the caller may see a turn of this (stored) learner id; another tenant's turn, stored or
        queued, is unknown here exactly as a turn that does not exist.

        A turn still in the outbox takes its feedback there (``queued``); a turn the store
        cannot be asked about, or does not know while an outbox here holds writes, is a
        ``StoreUnavailableError`` (503, retry): never a 404 for a turn that was answered."""
        pending = self._pending
        if pending is not None:
            pending.ensure_started()
            queued = pending.pending_turn(body.turn_id)
            if queued is not None or pending.pending_feedback(body.turn_id) is not None:
                turn = _owned(queued or await self._turn(body.turn_id), owns)
                return await self._queue(turn, body)
        turn = _owned(await self._turn(body.turn_id), owns)
        if pending is not None and self._guard.away:
            # Writes are failing (the turn could still be read): the personalization replica
            # would wait out the store's lock; the outbox applies it when the store is back.
            return await self._queue(turn, body)
        try:
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
        except UnavailableError:
            if pending is None:
                raise
            # The turn is stored: the outbox applies the feedback straight to the store (the
            # same idempotent steps), whether or not the failed call got part of it done.
            return await self._queue(turn, body)

    async def _turn(self, turn_id: str) -> TurnRecord:
        try:
            turn = await self._guard.call(self._store.get_turn, turn_id, read=True)
        except StoreUnavailable as exc:
            raise StoreUnavailableError(
                f"the store is unavailable ({exc}); the feedback was not recorded"
            ) from exc
        if turn is not None:
            return turn
        if self._pending is not None and (
            self._pending.depth() or await self._pending.others_pending()
        ):
            raise StoreUnavailableError(
                f"turn_id {turn_id!r} is not stored yet (writes are waiting for the store); "
                "the feedback was not recorded"
            )
        raise NotFoundError(f"unknown turn_id {turn_id!r}")

    async def _queue(self, turn: TurnRecord, body: FeedbackRequest) -> FeedbackResponse:
        async with self._queueing:
            queued = self._pending.pending_feedback(turn.turn_id)
            if queued is not None:  # one feedback per turn: the first one stands
                return FeedbackResponse(
                    turn_id=turn.turn_id,
                    accepted=False,
                    reward=queued.reward,
                    strategy=turn.strategy,
                    queued=True,
                )
            feedback = FeedbackRecord(
                turn_id=turn.turn_id,
                learner_id=turn.learner_id,
                reward=body.reward,
                ts=time.time(),
                **(body.answer.model_dump() if body.answer else {}),
            )
            if not await self._pending.queue_feedback(feedback):
                raise StoreUnavailableError("the feedback could not be journaled; not recorded")
        return FeedbackResponse(
            turn_id=turn.turn_id,
            accepted=True,
            reward=body.reward,
            strategy=turn.strategy,
            queued=True,
        )

    async def profile(self, learner_id: str) -> LearnerProfile:
        """Mastery, emotion trend, pace and strategies; a part whose model fails is left out
        and named in ``degraded``."""
        learner = await asyncio.to_thread(self._store.get_learner, learner_id)
        if learner is None:
            raise NotFoundError(f"unknown learner_id {learner_id!r}")
        # The rows a turn would send (mastery from the model's own window) and the true count.
        stored, answer_count = await asyncio.to_thread(stored_history, self._store, learner_id)
        answers = history_window(stored, answer_count)
        turns = await asyncio.to_thread(self._store.recent_turns, learner_id, limit=PROFILE_TURNS)
        degraded: list[str] = []

        async def optional(name: str, call: Awaitable[T], fallback: T) -> T:
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await call
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
        mastery, strategies, version, preferred_strategy, risk = await asyncio.gather(
            optional(
                "difficulty",
                difficulty.mastery.remote(answers, learner_id=learner_id),
                [],
            ),
            optional("personalization", personalization.strategy_stats.remote(learner_id), {}),
            optional("difficulty", difficulty.model_version.remote(learner_id), "unavailable"),
            preferred(),
            self._risk(learner_id, degraded),
        )
        median_gap, sessions = learner_pace([t.ts for t in turns])
        return LearnerProfile(
            learner_id=learner_id,
            turn_count=learner.turn_count,
            answer_count=answer_count,
            created_at=learner.created_at,
            last_turn_at=learner.last_turn_at,
            mastery=mastery,
            emotion_trend=emotion_trend([t.emotion.get("states", {}) for t in turns]),
            pace=Pace(median_s_between_turns=median_gap, sessions=sessions),
            strategies=strategies,
            preferred_strategy=preferred_strategy,
            model_version=version,
            risk=risk,
            degraded=sorted(set(degraded)),
        )

    async def _risk(self, learner_id: str, degraded: list[str]) -> LearnerRisk | None:
        """The at-risk job's latest score, read through the store guard: a store that fails
        or is away leaves it out (named in ``degraded``) rather than failing the profile."""
        try:
            record = await self._guard.call(self._store.learner_risk, learner_id, read=True)
        except StoreUnavailable as exc:
            logger.warning("profile: the learner's risk is unavailable: %s", exc)
            degraded.append("risk: StoreUnavailable")
            return None
        return None if record is None else risk_from_record(record)
