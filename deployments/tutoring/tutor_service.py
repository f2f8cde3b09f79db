"""/v1/tutor and /v1/chat/completions: one tutoring turn, answered whole or as a stream.

A stream is an async iterator of ready-to-send server-sent-event strings; the route only wraps
it in a streaming response. Every answered turn is reported to the observer (the ingress's
Prometheus metrics) and logged by id, never with the learner's message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from deployments.schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    LearnerState,
    StrategyChoice,
    TutorRequest,
    TutorResponse,
)
from deployments.tutoring import openai_chat
from deployments.tutoring.turn_runner import Turn, TurnRunner

logger = logging.getLogger("ray.serve")
EventStream = AsyncIterator[str]


class TurnObserver(Protocol):
    """Where answered turns are reported (the ingress's Prometheus metrics)."""

    def record_turn(self, response: TutorResponse, *, stream: bool) -> None: ...


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def state_event(
    turn_id: str,
    learner_state: LearnerState,
    strategy: StrategyChoice,
    versions: dict[str, str],
    degraded: list[str],
) -> str:
    """The stream's first event: what the models found, before any reply token."""
    return sse(
        "state",
        {
            "turn_id": turn_id,
            "learner_state": learner_state.model_dump(),
            "strategy": strategy.model_dump(),
            "model_versions": versions,
            "degraded": list(degraded),
        },
    )


async def replay_events(stored: TutorResponse) -> EventStream:
    """A retried streaming turn: the stored turn as the same three kinds of event."""
    yield state_event(
        stored.turn_id,
        stored.learner_state,
        stored.strategy,
        stored.model_versions,
        stored.degraded,
    )
    yield sse("token", {"text": stored.reply})
    yield sse("summary", stored.model_dump())


class TutorService:
    def __init__(self, runner: TurnRunner, observer: TurnObserver | None = None) -> None:
        self.runner = runner
        self._observer = observer

    async def tutor(self, request: TutorRequest, request_id: str) -> TutorResponse | EventStream:
        """The turn (or, for a retried ``turn_id``, the stored one); events with ``stream``.

        Raises ``ConflictError`` for another learner's ``turn_id``."""
        replayed = await self.runner.replay(request)
        if replayed is not None:
            return replay_events(replayed) if request.stream else replayed
        turn = await self.runner.prepare(request, request_id)
        if request.stream:
            return self._tutor_events(turn)
        return await self._answer(turn)

    async def chat(
        self, body: ChatCompletionRequest, request_id: str, *, learner_id: str | None = None
    ) -> ChatCompletionResponse | EventStream:
        """The turn in OpenAI's format; ``data:`` chunks with ``stream``. ``learner_id``: the
        stored id of ``body.user`` when it differs (a tenant's; deployments/security/tenancy).

        Raises ``InvalidRequestError`` when no user message has text."""
        request = openai_chat.tutor_request(body)
        if learner_id is not None:
            request = request.model_copy(update={"learner_id": learner_id})
        turn = await self.runner.prepare(request, request_id)
        if body.stream:
            return self._chat_chunks(turn)
        return openai_chat.completion(await self._answer(turn), request.message)

    async def _answer(self, turn: Turn) -> TutorResponse:
        reply, llm = await self.runner.reply(turn)
        response = await self.runner.finish(turn, reply, llm)
        self._record(response, stream=False)
        return response

    async def _tutor_events(self, turn: Turn) -> EventStream:
        versions = self.runner.model_versions(turn)
        yield state_event(
            turn.turn_id, turn.learner_state(), turn.strategy, versions, turn.degraded
        )
        async for event in self.runner.stream_turn(turn):
            if event["type"] == "token":
                yield sse("token", {"text": event["text"]})
            elif event["type"] == "error":
                yield sse("error", {"message": event["message"]})
            else:
                self._record(event["response"], stream=True)
                yield sse("summary", event["response"].model_dump())

    async def _chat_chunks(self, turn: Turn) -> EventStream:
        chunks = openai_chat.ChunkWriter(turn.turn_id)
        yield chunks.role()
        error = None
        async for event in self.runner.stream_turn(turn):
            if event["type"] == "token":
                yield chunks.content(event["text"])
            elif event["type"] == "error":
                error = event["message"]
            else:
                self._record(event["response"], stream=True)
                yield chunks.error(error) if error else chunks.finish(event["response"])
        yield chunks.done()

    def _record(self, response: TutorResponse, *, stream: bool) -> None:
        if self._observer is not None:
            self._observer.record_turn(response, stream=stream)
        logger.info(
            "turn %s learner=%s state=%s strategy=%s provider=%s total_ms=%s degraded=%s",
            response.turn_id,
            response.learner_id,
            response.learner_state.emotion.state,
            response.strategy.name,
            response.llm.provider,
            response.timings_ms.get("total"),
            response.degraded,
        )
