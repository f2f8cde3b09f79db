"""Persistence for learners, turns, answers, feedback and the bandit's statistics."""

from store.base import StoreError, TutorStore
from store.factory import DEFAULT_STORE_URI, open_store
from store.records import (
    AnswerRecord,
    ArmStats,
    FeedbackRecord,
    LearnerRecord,
    RewardRecord,
    TurnRecord,
)

__all__ = [
    "DEFAULT_STORE_URI",
    "AnswerRecord",
    "ArmStats",
    "FeedbackRecord",
    "LearnerRecord",
    "RewardRecord",
    "StoreError",
    "TurnRecord",
    "TutorStore",
    "open_store",
]
