"""The local provider: a tiny randomly initialised causal LM made here, served and routed to."""

from __future__ import annotations

import httpx

from deployments.llm_router import LLMRouterDeployment
from deployments.local_llm import LocalLMDeployment
from models.llm.local_lm import LocalLM
from models.llm.prompts import ReplyContext
from tests.support.fake_handles import FakeHandle

MESSAGES = [
    {"role": "system", "content": "You are a tutor."},
    {"role": "user", "content": "why is one half more than one third?"},
]


def test_the_model_streams_text_within_the_token_budget(tiny_lm):
    lm = LocalLM(tiny_lm)
    pieces = list(lm.stream(MESSAGES, max_new_tokens=6, temperature=0.0))
    assert pieces and all(isinstance(p, str) and p for p in pieces)
    assert len(lm.tokenizer("".join(pieces), add_special_tokens=False).input_ids) <= 6 + 2
    again = list(lm.stream(MESSAGES, max_new_tokens=6, temperature=0.0))
    assert again == pieces  # greedy decoding: the same prompt, the same reply


async def test_the_deployment_streams_without_blocking_its_event_loop(tiny_lm):
    deployment = LocalLMDeployment(model_path=str(tiny_lm))
    pieces = [p async for p in deployment.stream(MESSAGES, 5, 0.0)]
    assert pieces
    assert deployment.model_version() == tiny_lm.name


def _router(local_lm) -> LLMRouterDeployment:
    router = LLMRouterDeployment(http_client=httpx.AsyncClient(), local_lm=local_lm)
    router.reconfigure(
        {"providers": [{"name": "local", "kind": "local", "model": "tiny", "max_tokens": 5}]}
    )
    return router


async def test_the_router_answers_with_the_local_provider(tiny_lm):
    deployment = LocalLMDeployment(model_path=str(tiny_lm))
    handle = FakeHandle(stream=deployment.stream)
    context = ReplyContext(message="why?", strategy="hint", emotion_state="neutral")
    text, llm, error = await _router(handle).respond(context)
    assert text and error is None
    assert (llm.provider, llm.model, [a.outcome for a in llm.attempts]) == ("local", "tiny", ["ok"])


async def test_a_local_provider_without_the_deployment_is_skipped():
    context = ReplyContext(message="why?", strategy="hint", emotion_state="neutral")
    _, llm, _ = await _router(None).respond(context)
    assert [(a.provider, a.outcome) for a in llm.attempts] == [
        ("local", "not_configured"),
        ("offline", "ok"),
    ]
