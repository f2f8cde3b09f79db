"""The ``risk`` part of ``GET /v1/learners/{id}``: the latest at-risk job's score of a learner.

Kept apart from ``v1`` so that module stays readable; ``LearnerProfile`` embeds it. The store's
record becomes this in ``deployments.tutoring.records.risk_from_record``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class RiskReason(BaseModel):
    code: str = Field(
        description="What the reason is about: recent_accuracy, overall_accuracy, wrong_streak, "
        "skill_mastery, weak_recent_skills, new_skills, short_history (risk); "
        "negative_emotion, pace_slowing, inactive (disengagement)."
    )
    kind: Literal["risk", "disengagement"]
    text: str = Field(description="The reason in words, from the learner's own numbers.")
    weight: float = Field(
        description="risk: log-odds the reason adds to the learner's risk, relative to an "
        "average learner; disengagement: the signal's value (share, ratio or days)."
    )


class LearnerRisk(BaseModel):
    risk: float | None = Field(
        ge=0,
        le=1,
        description="P(accuracy of the learner's next 10 answers < 0.5); null without answers.",
    )
    disengagement: float | None = Field(
        ge=0,
        le=1,
        description="From pace and emotion trend (hand-set weights, not fitted); null without "
        "turns.",
    )
    reasons: list[RiskReason]
    computed_at: float = Field(description="When the job run scored it (epoch seconds).")
    computed_date: str = Field(description="computed_at's UTC date, YYYY-MM-DD.")
    model_version: str = Field(description="The risk model's registry version.")
    run_id: str
