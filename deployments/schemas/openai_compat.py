"""The OpenAI-compatible API's schemas: /v1/chat/completions and /v1/models, as far as the
tutor uses OpenAI's wire format."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from deployments.schemas.v1 import MAX_MESSAGE_CHARS, Identifier

# ---- OpenAI-compatible: /v1/chat/completions, /v1/models ----------------------------------

TUTOR_MODEL_ID = "tutor"
# A character that is whitespace neither to JSON Schema's regexes (ECMA-262's \s, without
# U+001C-U+001F and U+0085) nor to Python's str.isspace() (without U+FEFF, or U+180E, which
# older ECMA-262 counted): the schema's "a user message with text" and the server's are then
# one test, whatever the client's validator. Spelled out, as \S means two different things.
TEXT_CHARACTER = (
    "[^\\t\\n\\v\\f\\r \\u001c-\\u001f\\u0085\\u00a0\\u1680\\u180e\\u2000-\\u200a"
    "\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]"
)
_HAS_TEXT = re.compile(TEXT_CHARACTER)
MAX_CHAT_MESSAGES = 200


class ChatMessage(BaseModel):
    # OpenAI clients send extra keys on messages (name, tool_calls...): accepted, ignored.
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request, as far as the tutor uses it.

    The learner is ``user``; the learner's message is the last ``user`` message. Earlier
    messages are not needed: the tutor's memory of the session comes from the store. Sampling
    parameters OpenAI clients may send (temperature, max_tokens, ...) are accepted and ignored:
    the tutor's providers are configured on the server.
    """

    model_config = ConfigDict(extra="ignore")
    model: Literal["tutor"] = Field(description="The only model: `tutor`.")
    messages: list[ChatMessage] = Field(
        min_length=1,
        max_length=MAX_CHAT_MESSAGES,
        description="At least one `user` message with text: the latest one is answered.",
        json_schema_extra={
            "contains": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"const": "user"},
                    "content": {"type": "string", "pattern": TEXT_CHARACTER},
                },
            }
        },
    )
    user: Identifier = Field(description="The learner id.")
    stream: StrictBool = False
    n: int = Field(default=1, ge=1, le=1, description="One reply per turn.")

    def learner_message(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user" and message.content and _HAS_TEXT.search(message.content):
                return message.content
        raise ValueError("messages: no user message with text to answer")


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatCompletionChoice(BaseModel):
    index: int = 0
    message: ChatCompletionMessage
    finish_reason: Literal["stop", "error"]


class ChatCompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TutorTurnSummary(BaseModel):
    """The tutor's own fields beside OpenAI's (clients ignore keys they do not know)."""

    turn_id: str
    strategy: str
    emotion_state: str
    provider: str
    degraded: list[str]


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str = TUTOR_MODEL_ID
    choices: list[ChatCompletionChoice]
    usage: ChatCompletionUsage = Field(description="Estimated: about 4 characters per token.")
    tutor: TutorTurnSummary


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "adaptive-tutor"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
