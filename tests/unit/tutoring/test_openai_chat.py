"""Our completion chunks as OpenAI's own SDK parses them (no server: a mock transport)."""

from __future__ import annotations

import re

import httpx
import jsonschema
import openai
import pytest

from deployments.schemas import (
    ChatCompletionRequest,
    LearnerState,
    LLMInfo,
    LLMUsage,
    ProviderAttempt,
    StrategyChoice,
    TutorResponse,
)
from deployments.schemas.openai_compat import TEXT_CHARACTER
from deployments.tutoring.fallbacks import unknown_emotion
from deployments.tutoring.openai_chat import ChunkWriter, tutor_request
from deployments.tutoring.openai_chat import completion as completion_of


def _sdk(body: str) -> openai.OpenAI:
    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    transport = httpx.MockTransport(reply)
    return openai.OpenAI(
        base_url="http://tutor.test/v1",
        api_key="unused",
        http_client=httpx.Client(transport=transport),
        max_retries=0,
    )


def _stream(sdk: openai.OpenAI):
    messages = [{"role": "user", "content": "hi"}]
    return sdk.chat.completions.create(model="tutor", messages=messages, user="l1", stream=True)


def test_a_broken_reply_reaches_the_sdk_as_an_error_after_its_text():
    chunks = ChunkWriter("t1")
    body = chunks.role() + chunks.content("Half ") + chunks.error("groq failed mid-reply")
    received = []
    with pytest.raises(openai.APIError, match="mid-reply"):
        for chunk in _stream(_sdk(body + chunks.done())):
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "Half "


def test_the_learner_message_is_the_last_user_message_with_text():
    body = ChatCompletionRequest.model_validate(
        {
            "model": "tutor",
            "user": "l1",
            "messages": [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "a reply"},
                {"role": "user", "content": "second"},
                {"role": "user", "content": "   "},
            ],
            "temperature": 0.2,  # accepted and ignored, as OpenAI clients send it
        }
    )
    request = tutor_request(body)
    assert (request.learner_id, request.message, request.stream) == ("l1", "second", False)


# Blank to one side only: Python strips U+001C-U+001F and U+0085, JSON Schema's \s does not;
# JSON Schema's \s holds U+FEFF, Python's str.isspace() does not. Then plain cases.
@pytest.mark.parametrize(
    "content", ["\x1e", "\x1c\x1f", "\x85", "\ufeff", "\u180e", " \u3000\t", "\x1ea", "x"]
)
def test_the_schema_and_the_server_agree_on_what_is_text(content):
    """A request the published schema calls valid is answered, one it does not is refused:
    the schema's pattern and the server's test are the same (schemathesis found "\x1e"
    schema-valid yet refused when the server used str.strip())."""
    # No shorthand class (\s, \S, \w, ...): each regex dialect reads those its own way.
    assert not re.search(r"\\[sSwWdD]", TEXT_CHARACTER)
    body = {"model": "tutor", "user": "l1", "messages": [{"role": "user", "content": content}]}
    schema = ChatCompletionRequest.model_json_schema()
    schema_valid = jsonschema.Draft202012Validator(schema).is_valid(body)
    try:
        tutor_request(ChatCompletionRequest.model_validate(body))
        answered = True
    except ValueError:
        answered = False
    assert schema_valid == answered, (content, schema_valid, answered)
    assert answered == any(
        not c.isspace() for c in content.replace("\ufeff", " ").replace("\u180e", " ")
    )


def _response(provider: str, outcomes: list[str], usage: LLMUsage | None = None):
    attempts = [ProviderAttempt(provider=provider, outcome=o, latency_ms=1.0) for o in outcomes]
    return TutorResponse(
        turn_id="t1",
        learner_id="l1",
        reply="Half a pizza is more than a third.",
        learner_state=LearnerState(emotion=unknown_emotion(), difficulty=None),
        strategy=StrategyChoice(name="analogy", propensity=0.5),
        llm=LLMInfo(provider=provider, model="m", attempts=attempts, usage=usage),
        model_versions={},
        timings_ms={},
    )


@pytest.mark.parametrize(
    ("provider", "outcomes", "finish"),
    [
        ("groq", ["ok"], "stop"),
        ("gemini", ["rate_limited", "ok"], "stop"),  # a fallback before any text is fine
        ("groq", ["error"], "error"),  # groq's text broke off mid-reply
        ("offline", ["error", "ok"], "stop"),
    ],
)
def test_a_completion_says_when_its_reply_broke_off(provider, outcomes, finish):
    completion = completion_of(_response(provider, outcomes), "why?")
    assert completion.choices[0].finish_reason == finish
    assert completion.usage.completion_tokens == len("Half a pizza is more than a third.") // 4
    assert completion.tutor.turn_id == "t1" and completion.id == "chatcmpl-t1"


def test_completion_usage_is_the_providers_count_when_it_gave_one():
    counted = LLMUsage(input_tokens=412, output_tokens=9, counted_by="provider", cost=0.0)
    usage = completion_of(_response("groq", ["ok"], counted), "why?").usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (412, 9, 421)
    guessed = LLMUsage(input_tokens=412, output_tokens=9, counted_by="estimate", cost=0.0)
    usage = completion_of(_response("groq", ["ok"], guessed), "why?").usage
    assert usage.prompt_tokens == 1  # the learner's "why?", estimated
