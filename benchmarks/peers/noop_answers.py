"""Constant answers of the tutor's real types and sizes, for what serving a turn costs around no
work: the no-op Serve graph's deployments (the floor, ``tutor_floor_app.py``) and the monolith's
HTTP-only route (``monolith_app.py``). No Ray here: the monolith runs without it.
"""

from __future__ import annotations

import uuid

from deployments.schemas import (
    DifficultyResponse,
    EmotionResponse,
    EmotionResult,
    Exercise,
    GoEmotionsScores,
    LearnerState,
    LLMInfo,
    Prediction,
    ProviderAttempt,
    StrategyChoice,
    TutorRequest,
    TutorResponse,
)
from models.common.vocab import LEARNING_STATES

NOOP_VERSION = "floor"
# The 28 GoEmotions labels' worth of scores, as a real answer carries (same bytes on the wire).
_SCORES = {f"label_{i:02d}": 0.01 for i in range(28)}
EMOTION_RESULT = EmotionResult(
    state="neutral",
    confidence=0.5,
    states={s: 1.0 / len(LEARNING_STATES) for s in LEARNING_STATES},
    goemotions=GoEmotionsScores(scores=_SCORES, predicted=["neutral"]),
)
STRATEGY = StrategyChoice(name="socratic", propensity=0.5)
LLM_INFO = LLMInfo(
    provider="offline",
    model="offline",
    attempts=[
        ProviderAttempt(provider=p, outcome="not_configured", latency_ms=0.0, detail="no key")
        for p in ("groq", "gemini")
    ],
)
REPLY = "Let's take it one step at a time: what do you already know about this problem?"


def emotion_response(texts: list[str]) -> EmotionResponse:
    return EmotionResponse(results=[EMOTION_RESULT] * len(texts), model_version=NOOP_VERSION)


def difficulty_response(history_length: int, candidates: list[Exercise]) -> DifficultyResponse:
    predictions = [
        Prediction(item_id=c.item_id, skill_id=c.skill_id, p_correct=0.75, basis="model")
        for c in candidates
    ]
    return DifficultyResponse(
        predictions=predictions,
        recommended=predictions[0],
        target_band=(0.70, 0.85),
        history_length=history_length,
        model_version=NOOP_VERSION,
    )


def tutor_response(
    request: TutorRequest,
    turn_id: str,
    *,
    emotion: EmotionResponse,
    difficulty: DifficultyResponse | None,
    strategy: StrategyChoice,
    policy_version: str,
    reply: str,
    llm: LLMInfo,
) -> TutorResponse:
    """The turn's answer from its parts, as the real turn assembles it."""
    versions = {"emotion": emotion.model_version, "personalization": policy_version}
    if difficulty is not None:
        versions["difficulty"] = difficulty.model_version
    return TutorResponse(
        turn_id=turn_id,
        learner_id=request.learner_id,
        reply=reply,
        learner_state=LearnerState(emotion=emotion.results[0], difficulty=difficulty),
        strategy=strategy,
        llm=llm,
        model_versions=versions,
        timings_ms={},
    )


def noop_turn(request: TutorRequest) -> TutorResponse:
    """A whole turn's answer with no model, store or hop: what answering it over HTTP costs."""
    return tutor_response(
        request,
        request.turn_id or uuid.uuid4().hex,
        emotion=emotion_response([request.message]),
        difficulty=difficulty_response(1, request.candidates) if request.candidates else None,
        strategy=STRATEGY,
        policy_version=NOOP_VERSION,
        reply=REPLY,
        llm=LLM_INFO,
    )
