"""The ``risk`` part of the learner profile, without Serve: from the store's latest job run,
null before one, left out (and named in ``degraded``) when the store fails."""

from __future__ import annotations

import pytest

from deployments.schemas import LearnerProfile, LearnerRisk
from deployments.tutoring.learners import Learners
from deployments.tutoring.records import risk_from_record
from deployments.tutoring.turn_runner import TurnHandles
from store import LearnerRiskRecord, RiskReasonRecord, StoreError
from store.sqlite_store import SQLiteStore
from tests.support.fake_handles import FakeHandle

SCORED_AT = 1_795_000_000.0  # 2026-11-18 UTC


async def _version(learner_id=None):
    return "v2"


async def _empty(*args, **kwargs):
    return {}


async def _mastery(history, **routing):
    return []


def _handles() -> TurnHandles:
    return TurnHandles(
        emotion=FakeHandle(),
        difficulty=FakeHandle(mastery=_mastery, model_version=_version),
        personalization=FakeHandle(strategy_stats=_empty),
        router=FakeHandle(),
    )


class _RiskReadFails(SQLiteStore):
    def learner_risk(self, learner_id):
        raise StoreError("disk I/O error")


def _record(learner_id: str) -> LearnerRiskRecord:
    return LearnerRiskRecord(
        learner_id=learner_id,
        risk=0.81,
        disengagement=None,
        reasons=[
            RiskReasonRecord(
                code="recent_accuracy",
                kind="risk",
                text="accuracy 2 of the last 10 (0 of the last 5)",
                weight=0.93,
            )
        ],
        scored_at=SCORED_AT,
        model_version="difficulty_risk/v1",
        run_id="at-risk-1",
    )


@pytest.fixture
def store(tmp_path):
    store = SQLiteStore(tmp_path / "t.db")
    store.get_or_create_learner("T/ada", now=SCORED_AT - 100)
    yield store
    store.close()


async def test_risk_is_null_until_a_job_run_scored_the_learner(store):
    profile = await Learners(_handles(), store, timeout_s=1.0).profile("T/ada")
    assert profile.risk is None and profile.degraded == []


async def test_the_stored_risk_of_the_tenant_prefixed_id_is_served(store):
    store.put_learner_risks([_record("T/ada"), _record("ada").model_copy(update={"risk": 0.1})])
    profile = await Learners(_handles(), store, timeout_s=1.0).profile("T/ada")
    assert profile.risk is not None
    assert profile.risk.risk == pytest.approx(0.81, abs=1e-12)
    assert profile.risk.computed_date == "2026-11-18"
    assert profile.risk.model_version == "difficulty_risk/v1"
    assert [r.text for r in profile.risk.reasons] == ["accuracy 2 of the last 10 (0 of the last 5)"]


async def test_a_store_fault_leaves_the_risk_out_and_says_so(tmp_path):
    store = _RiskReadFails(tmp_path / "t.db")
    store.get_or_create_learner("ada", now=SCORED_AT)
    profile = await Learners(_handles(), store, timeout_s=1.0).profile("ada")
    assert profile.risk is None
    assert profile.degraded == ["risk: StoreUnavailable"]
    store.close()


def test_the_profile_schema_with_and_without_risk():
    base = dict(
        learner_id="ada",
        turn_count=3,
        answer_count=0,
        created_at=SCORED_AT,
        last_turn_at=None,
        mastery=[],
        emotion_trend={},
        pace={"median_s_between_turns": None, "sessions": 0},
        strategies={},
        preferred_strategy=None,
        model_version="v2",
    )
    without = LearnerProfile(**base)
    assert without.model_dump()["risk"] is None
    risk = risk_from_record(_record("ada"))
    with_risk = LearnerProfile.model_validate_json(
        LearnerProfile(**base, risk=risk).model_dump_json()
    )
    assert with_risk.risk == risk
    properties = LearnerProfile.model_json_schema()["$defs"]["LearnerRisk"]["properties"]
    assert {"risk", "disengagement", "reasons", "computed_at", "model_version"} <= set(properties)
    with pytest.raises(ValueError, match="less than or equal to 1"):
        LearnerRisk(**{**risk.model_dump(), "risk": 1.5})
