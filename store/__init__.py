"""Persistence for learners, turns, answers, feedback, the bandit's statistics, and the
model lifecycle's records (rollout history, shadow outputs, serving counts)."""

from store.base import AnswerRow, StoreError, TutorStore
from store.factory import DEFAULT_STORE_URI, open_store
from store.records import (
    API_SCOPES,
    AnswerRecord,
    ApiKeyRecord,
    ArmStats,
    FeedbackRecord,
    LearnerRecord,
    LearnerRiskRecord,
    RewardRecord,
    RiskReasonRecord,
    RolloutEventRecord,
    ServingStatsRecord,
    ShadowOutputRecord,
    TurnRecord,
)

__all__ = [
    "API_SCOPES",
    "DEFAULT_STORE_URI",
    "ApiKeyRecord",
    "AnswerRecord",
    "AnswerRow",
    "ArmStats",
    "FeedbackRecord",
    "LearnerRecord",
    "LearnerRiskRecord",
    "RewardRecord",
    "RiskReasonRecord",
    "RolloutEventRecord",
    "ServingStatsRecord",
    "ShadowOutputRecord",
    "StoreError",
    "TurnRecord",
    "TutorStore",
    "open_store",
]
