"""The tutor in OpenAI's wire format: request conversion, completions and stream chunks.

An OpenAI SDK client talks to the tutor as to a model named ``tutor``; each call is one
tutoring turn (emotion, difficulty, strategy, reply, stored), with the learner in ``user``.
"""

from __future__ import annotations

import json
import time

from deployments.schemas import (
    TUTOR_MODEL_ID,
    ChatCompletionChoice,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionUsage,
    ModelCard,
    ModelList,
    TutorRequest,
    TutorResponse,
    TutorTurnSummary,
)
from deployments.tutoring.exceptions import InvalidRequestError
from models.llm.offline import OFFLINE_PROVIDER
from models.llm.routing import estimate_tokens

_STARTED = int(time.time())


def tutor_request(body: ChatCompletionRequest) -> TutorRequest:
    """Raises ``InvalidRequestError`` when no user message has text."""
    try:  # (pydantic's ValidationError is a ValueError too: e.g. a message past the limit)
        return TutorRequest(
            learner_id=body.user, message=body.learner_message(), stream=body.stream
        )
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from exc


def model_list() -> ModelList:
    return ModelList(data=[ModelCard(id=TUTOR_MODEL_ID, created=_STARTED)])


def _summary(response: TutorResponse) -> TutorTurnSummary:
    return TutorTurnSummary(
        turn_id=response.turn_id,
        strategy=response.strategy.name,
        emotion_state=response.learner_state.emotion.state,
        provider=response.llm.provider,
        degraded=response.degraded,
    )


def _usage(response: TutorResponse, message: str) -> ChatCompletionUsage:
    """The answering provider's count (system prompt and memory included) when it gave one;
    else an estimate from the learner's message and the reply."""
    usage = response.llm.usage
    if usage is not None and usage.counted_by == "provider":
        prompt, reply = usage.input_tokens, usage.output_tokens
    else:
        prompt, reply = estimate_tokens(message), estimate_tokens(response.reply)
    return ChatCompletionUsage(
        prompt_tokens=prompt, completion_tokens=reply, total_tokens=prompt + reply
    )


def completion(response: TutorResponse, message: str) -> ChatCompletionResponse:
    """``message`` is the learner's."""
    return ChatCompletionResponse(
        id=f"chatcmpl-{response.turn_id}",
        created=int(time.time()),
        choices=[
            ChatCompletionChoice(
                message=ChatCompletionMessage(content=response.reply),
                finish_reason="error" if _broke(response) else "stop",
            )
        ],
        usage=_usage(response, message),
        tutor=_summary(response),
    )


def _broke(response: TutorResponse) -> bool:
    """A provider answered and then failed: its attempt, the last one, is not ``ok``.

    (The offline responder never breaks; when it answers, earlier failures were before any text.)
    """
    llm = response.llm
    if llm.provider == OFFLINE_PROVIDER or not llm.attempts:
        return False
    return llm.attempts[-1].outcome != "ok"


class ChunkWriter:
    """``data:`` lines of one streamed completion, as OpenAI's SDKs parse them."""

    def __init__(self, turn_id: str) -> None:
        self.id = f"chatcmpl-{turn_id}"
        self.created = int(time.time())

    def _chunk(self, delta: dict, finish_reason: str | None = None, **extra) -> str:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": TUTOR_MODEL_ID,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"

    def role(self) -> str:
        return self._chunk({"role": "assistant"})

    def content(self, text: str) -> str:
        return self._chunk({"content": text})

    def finish(self, response: TutorResponse) -> str:
        return self._chunk({}, "stop", tutor=_summary(response).model_dump())

    def error(self, message: str) -> str:
        # OpenAI's SDKs raise an APIError on a chunk with an `error` key: the client learns the
        # reply broke, and keeps the text it already has.
        return f"data: {json.dumps({'error': {'message': message, 'type': 'provider_error'}})}\n\n"

    def done(self) -> str:
        return "data: [DONE]\n\n"
