"""A learner's answer history as the difficulty model reads it (rows: stored answers, then
posted), and what a turn loads from the store before its models run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Protocol

from deployments.schemas import MAX_HISTORY, TutorRequest
from store import AnswerRecord, AnswerRow, TurnRecord, TutorStore

RECENT_TURNS = 20


class AnswerLike(Protocol):
    item_id: str
    skill_id: str
    correct: bool


def as_rows(answers: Iterable[AnswerLike]) -> list[AnswerRow]:
    """Answers (records, posted answers, Interactions), oldest first, as the rows a history
    crosses the hop to the Difficulty deployment in: plain tuples
    (``models.difficulty.tracer_api.as_interactions`` says why; the replica rebuilds them)."""
    return [(a.item_id, a.skill_id, a.correct) for a in answers]


async def learner_history(
    store: TutorStore, learner_id: str | None, posted: Sequence[AnswerLike] = ()
) -> list[AnswerRow]:
    """The learner's stored answers (none without a learner id) followed by ``posted``; the
    newest ``MAX_HISTORY`` of them, as rows."""
    stored = []
    if learner_id is not None:
        stored = await asyncio.to_thread(store.answer_rows, learner_id, limit=MAX_HISTORY)
    return (stored + as_rows(posted))[-MAX_HISTORY:]


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
) -> tuple[bool, bool, list[AnswerRow], list[TurnRecord]]:
    """A turn's first store call: whether it created the learner, whether it stored the
    answer, then the learner's answers (as rows) and recent turns."""
    _, created = store.get_or_create_learner(learner_id, now=now)
    answered = answer is not None and store.add_answer(answer)
    answers = store.answer_rows(learner_id, limit=MAX_HISTORY)
    return created, answered, answers, store.recent_turns(learner_id, limit=RECENT_TURNS)
