"""A learner's answer history as the difficulty model reads it: stored answers, then posted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Protocol

from deployments.schemas import MAX_HISTORY
from models.difficulty.tracer import Interaction
from store import TutorStore


class AnswerLike(Protocol):
    item_id: str
    skill_id: str
    correct: bool


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
