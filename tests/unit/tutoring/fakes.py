"""Stand-ins for the model deployments' methods, as the tutoring logic calls them."""

import asyncio

from deployments.schemas import (
    EmotionResponse,
    EmotionResult,
    GoEmotionsScores,
    LLMInfo,
    ProviderAttempt,
    StrategyChoice,
)


async def emotion_ok(texts, **routing):
    result = EmotionResult(
        state="curious",
        confidence=0.9,
        states={"curious": 0.9, "neutral": 0.1},
        goemotions=GoEmotionsScores(scores={"curiosity": 0.9}, predicted=["curiosity"]),
    )
    return EmotionResponse(results=[result] * len(texts), model_version="v9")


async def fails(*args, **kwargs):
    raise RuntimeError("replica died")


async def hangs(*args, **kwargs):
    await asyncio.sleep(60)


async def choose(context, **routing):
    assert len(context) == 15
    return StrategyChoice(name="quiz", propensity=0.5), "policy-x"


async def respond(context):
    info = LLMInfo(
        provider="p",
        model="m",
        attempts=[ProviderAttempt(provider="p", outcome="ok", latency_ms=1)],
    )
    return f"reply to {context.message}", info, None
