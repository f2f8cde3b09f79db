"""Records as the store keeps them and as the API answers them: a turn (``TurnRecord``,
``TutorResponse``) and a learner's latest risk (``LearnerRiskRecord``, ``LearnerRisk``)."""

from __future__ import annotations

from datetime import UTC, datetime

from deployments.schemas import (
    DifficultyResponse,
    EmotionResult,
    LearnerRisk,
    LearnerState,
    LLMInfo,
    ProviderAttempt,
    RiskReason,
    StrategyChoice,
    TutorResponse,
)
from store.records import LearnerRiskRecord, TurnRecord


def record_from_response(
    response: TutorResponse,
    *,
    session_id: str | None,
    ts: float,
    request_id: str,
    message: str,
    context: list[float],
) -> TurnRecord:
    return TurnRecord(
        turn_id=response.turn_id,
        learner_id=response.learner_id,
        session_id=session_id,
        ts=ts,
        request_id=request_id,
        message=message,
        reply=response.reply,
        emotion=response.learner_state.emotion.model_dump(),
        difficulty=response.learner_state.difficulty.model_dump()
        if response.learner_state.difficulty
        else {},
        strategy=response.strategy.name,
        propensity=response.strategy.propensity,
        context=context,
        provider=response.llm.provider,
        model=response.llm.model,
        llm_attempts=[a.model_dump() for a in response.llm.attempts],
        model_versions=response.model_versions,
        timings_ms=response.timings_ms,
        degraded=response.degraded,
    )


def response_from_record(record: TurnRecord) -> TutorResponse:
    return TutorResponse(
        turn_id=record.turn_id,
        learner_id=record.learner_id,
        reply=record.reply,
        learner_state=LearnerState(
            emotion=EmotionResult.model_validate(record.emotion),
            difficulty=DifficultyResponse.model_validate(record.difficulty)
            if record.difficulty
            else None,
        ),
        strategy=StrategyChoice(name=record.strategy, propensity=record.propensity),
        llm=LLMInfo(
            provider=record.provider,
            model=record.model,
            attempts=[ProviderAttempt.model_validate(a) for a in record.llm_attempts],
        ),
        model_versions=record.model_versions,
        timings_ms=record.timings_ms,
        degraded=record.degraded,
    )


def risk_from_record(record: LearnerRiskRecord) -> LearnerRisk:
    return LearnerRisk(
        risk=record.risk,
        disengagement=record.disengagement,
        reasons=[RiskReason(**r.model_dump()) for r in record.reasons],
        computed_at=record.scored_at,
        computed_date=datetime.fromtimestamp(record.scored_at, UTC).date().isoformat(),
        model_version=record.model_version,
        run_id=record.run_id,
    )
