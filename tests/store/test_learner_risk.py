"""Learners at risk in both backends: the round trip, and the upsert that keeps the newest run."""

from __future__ import annotations

from store import LearnerRiskRecord, RiskReasonRecord, TutorStore


def _risk(learner_id: str, scored_at: float, risk: float | None = 0.7) -> LearnerRiskRecord:
    return LearnerRiskRecord(
        learner_id=learner_id,
        risk=risk,
        disengagement=None if risk is None else 0.2,
        reasons=[
            RiskReasonRecord(
                code="recent_accuracy", kind="risk", text="accuracy 2 of the last 10", weight=0.9
            ),
            RiskReasonRecord(
                code="pace_slowing", kind="disengagement", text="pace slowing", weight=2.1
            ),
        ],
        scored_at=scored_at,
        model_version="difficulty_risk/v1",
        run_id=f"run-{scored_at:.0f}",
    )


def test_a_risk_round_trips_every_field_and_tenant_prefixed_ids(store: TutorStore) -> None:
    records = [_risk("T/ada", 100.0), _risk("ada", 100.0, risk=None)]
    assert store.put_learner_risks(records) == 2
    assert store.learner_risk("T/ada") == records[0]
    assert store.learner_risk("ada") == records[1]
    assert store.learner_risk("T/bob") is None


def test_the_newest_run_stands_and_a_rerun_is_idempotent(store: TutorStore) -> None:
    assert store.put_learner_risks([_risk("a", 100.0), _risk("b", 100.0)]) == 2
    assert store.put_learner_risks([_risk("a", 100.0), _risk("b", 100.0)]) == 2  # same again
    newer = _risk("a", 200.0, risk=0.1)
    assert store.put_learner_risks([newer, _risk("b", 50.0, risk=0.9)]) == 1  # b's is older
    assert store.learner_risk("a") == newer
    assert store.learner_risk("b") == _risk("b", 100.0)
    assert store.put_learner_risks([]) == 0
