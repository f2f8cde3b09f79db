"""Hand-made records for the lifecycle tests: only the fields the metrics read vary."""

from __future__ import annotations

from store.records import (
    AnswerRecord,
    RewardRecord,
    ServingStatsRecord,
    ShadowOutputRecord,
    TurnRecord,
)


def turn(
    turn_id: str,
    ts: float,
    *,
    learner: str = "l1",
    predictions: dict[str, float] | None = None,
    state: str = "neutral",
    strategy: str = "hint",
    propensity: float = 0.5,
    versions: dict[str, str] | None = None,
) -> TurnRecord:
    predictions = {"i1": 0.8} if predictions is None else predictions
    listed = [{"item_id": i, "skill_id": "s1", "p_correct": p} for i, p in predictions.items()]
    return TurnRecord(
        turn_id=turn_id,
        learner_id=learner,
        ts=ts,
        request_id=f"req-{turn_id}",
        message="hello",
        reply="hi",
        emotion={"state": state, "states": {state: 1.0}},
        difficulty={"predictions": listed, "recommended": listed[0]} if listed else {},
        strategy=strategy,
        propensity=propensity,
        context=[],
        provider="offline",
        model="offline",
        model_versions={"emotion": "v3", "difficulty": "v1", "personalization": "v1"}
        | (versions or {}),
        timings_ms={},
    )


def answer(
    source_id: str, ts: float, *, correct: bool = True, item: str = "i1", learner: str = "l1"
) -> AnswerRecord:
    return AnswerRecord(
        learner_id=learner, source_id=source_id, item_id=item, skill_id="s1", correct=correct, ts=ts
    )


def reward(
    turn_id: str, value: float, *, source: str = "answer", ts: float = 100.0, learner: str = "l1"
) -> RewardRecord:
    return RewardRecord(
        turn_id=turn_id,
        learner_id=learner,
        source=source,
        policy="v1",
        strategy="hint",
        reward=value,
        ts=ts,
    )


def shadow(
    turn_id: str,
    model: str,
    version: str,
    output: dict,
    *,
    served_version: str = "v1",
    learner: str = "l1",
    ts: float = 0.0,
) -> ShadowOutputRecord:
    return ShadowOutputRecord(
        turn_id=turn_id,
        learner_id=learner,
        model=model,
        version=version,
        served_version=served_version,
        output=output,
        ts=ts,
    )


def stats_record(
    version: str,
    requests: int,
    errors: int,
    counts: list[int],
    *,
    replica: str = "r1",
    model: str = "emotion",
) -> ServingStatsRecord:
    return ServingStatsRecord(
        model=model,
        version=version,
        replica=replica,
        window_start=0.0,
        window_end=10.0,
        requests=requests,
        errors=errors,
        latency_counts=counts,
    )
