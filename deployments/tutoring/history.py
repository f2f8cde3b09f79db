"""A learner's answer history as the difficulty model reads it: stored answers, then posted;
and what a turn loads from the store before its models run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Protocol

from deployments.schemas import MAX_HISTORY, TutorRequest
from models.difficulty.tracer import Interaction
from store import AnswerRecord, TurnRecord, TutorStore

RECENT_TURNS = 20


class AnswerLike(Protocol):
    item_id: str
    skill_id: str
    correct: bool


def as_rows(history: Iterable[Interaction]) -> list[tuple[str, str, bool]]:
    """A history as it crosses the hop to the Difficulty deployment: plain tuples
    (``models.difficulty.tracer.as_interactions`` says why; the replica rebuilds them)."""
    return [(h.item_id, h.skill_id, h.correct) for h in history]


def interactions(answers: Iterable[AnswerLike]) -> list[Interaction]:
    """Stored answer records or posted answers, oldest first, as the tracer's rows."""
    return [Interaction(a.item_id, a.skill_id, a.correct) for a in answers]


async def learner_history(
    store: TutorStore, learner_id: str | None, posted: Sequence[AnswerLike] = ()
) -> list[Interaction]:
    """The learner's stored answers (none without a learner id) followed by ``posted``; the
    newest ``MAX_HISTORY`` of them."""
    stored = []
    if learner_id is not None:
        stored = await asyncio.to_thread(store.answers, learner_id, limit=MAX_HISTORY)
    return (interactions(stored) + interactions(posted))[-MAX_HISTORY:]


def posted_answer(request: TutorRequest, turn_id: str, ts: float) -> AnswerRecord | None:
    """The answer a turn carries, as stored: idempotent by the turn's id."""
    if request.answer is None:
        return None
    return AnswerRecord(
        learner_id=request.learner_id,
        source_id=f"{turn_id}:answer",
        ts=ts,
        **request.answer.model_dump(),
    )


def load_learner(
    store: TutorStore, learner_id: str, answer: AnswerRecord | None, *, now: float
) -> tuple[bool, bool, list[AnswerRecord], list[TurnRecord]]:
    """A turn's first store call: whether it created the learner, whether it stored the
    answer, then the learner's answers and recent turns."""
    _, created = store.get_or_create_learner(learner_id, now=now)
    answered = answer is not None and store.add_answer(answer)
    answers = store.answers(learner_id, limit=MAX_HISTORY)
    return created, answered, answers, store.recent_turns(learner_id, limit=RECENT_TURNS)
