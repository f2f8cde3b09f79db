"""A learner's answer history as the difficulty model reads it (rows: stored answers, then
posted), and what a turn loads from the store before its models run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Protocol

from deployments.schemas import MAX_HISTORY, TutorRequest
from models.difficulty.tracer_api import window_start
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


def history_window(rows: Sequence[AnswerRow], total: int) -> list[AnswerRow]:
    """Of a learner's ``total`` answers, the rows the difficulty model is sent: those from
    ``window_start(total, MAX_HISTORY)`` on, given ``rows``, the newest (at least that many).

    The start moves only every ``MAX_HISTORY // 2`` answers, as a tracer's own window does
    (``models.difficulty.tracer_api``), so past 1,000 answers a turn's history is still the
    previous turn's plus the new answer, and the Difficulty replica extends its cached
    encoding instead of encoding the window again. "The newest 1,000" shifted by one row every
    turn and missed that cache on every turn (the served v5 stack on 4 candidates: ~6 ms a
    turn against ~0.7). Every stride divides 500 for the shipped tracers' windows (200, 1000),
    so each reads exactly the rows it would read of the whole history."""
    start = window_start(total, MAX_HISTORY) - (total - len(rows))
    return list(rows[max(0, start) :])


async def learner_history(
    store: TutorStore, learner_id: str | None, posted: Sequence[AnswerLike] = ()
) -> list[AnswerRow]:
    """The learner's stored answers (none without a learner id) followed by ``posted``, as
    rows: the window of them ``history_window`` keeps."""
    stored, count = [], 0
    if learner_id is not None:
        stored, count = await asyncio.to_thread(stored_history, store, learner_id)
    return history_window(stored + as_rows(posted), count + len(posted))


def stored_history(store: TutorStore, learner_id: str) -> tuple[list[AnswerRow], int]:
    """The learner's newest ``MAX_HISTORY`` answers, as rows, and how many answers they have
    (counted only when there may be more: one query for most learners)."""
    rows = store.answer_rows(learner_id, limit=MAX_HISTORY)
    # An answer stored between the two reads makes the count one ahead of the rows: that
    # turn's window starts a row late (a cache miss at worst), never holds a wrong row.
    count = store.answer_count(learner_id) if len(rows) == MAX_HISTORY else len(rows)
    return rows, count


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
    answers = history_window(*stored_history(store, learner_id))
    return created, answered, answers, store.recent_turns(learner_id, limit=RECENT_TURNS)
