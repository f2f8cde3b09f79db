"""What a turn assumes when a stage is unavailable: no information, never an invented answer."""

from __future__ import annotations

from deployments.schemas import EmotionResult, GoEmotionsScores, LLMInfo, ProviderAttempt
from models.common.vocab import LEARNING_STATES
from models.llm.offline import OFFLINE_MODEL, OFFLINE_PROVIDER


def unknown_emotion() -> EmotionResult:
    """What the tutor assumes when the emotion stage is unavailable: no information."""
    uniform = 1.0 / len(LEARNING_STATES)
    return EmotionResult(
        state="neutral",
        confidence=uniform,
        states={s: uniform for s in LEARNING_STATES},
        goemotions=GoEmotionsScores(scores={}, predicted=[]),
    )


def offline_info(reason: str) -> LLMInfo:
    return LLMInfo(
        provider=OFFLINE_PROVIDER,
        model=OFFLINE_MODEL,
        attempts=[
            ProviderAttempt(provider="router", outcome="error", latency_ms=0.0, detail=reason)
        ],
    )
