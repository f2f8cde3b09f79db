"""The export's tables: one Arrow schema per store table, and each record as one of its rows.

The layout (README "For researchers", the data card) is a contract that batch scoring, the
at-risk job and the off-policy evaluation read: a column changes only with them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from store import AnswerRecord, FeedbackRecord, RewardRecord, TurnRecord

# Raise when a table's columns change: an export written under another format is rewritten whole.
FORMAT = 1

TURNS = pa.schema(
    [
        ("turn_id", pa.string()),
        ("learner_id", pa.string()),
        ("session_id", pa.string()),
        ("ts", pa.float64()),  # epoch seconds, UTC
        ("request_id", pa.string()),
        ("message", pa.string()),  # the learner's text: personal data
        ("reply", pa.string()),  # the tutor's answer to it, which may quote it: personal data
        ("emotion_state", pa.string()),
        ("emotion_confidence", pa.float64()),
        ("emotion_json", pa.string()),
        ("difficulty_json", pa.string()),
        ("strategy", pa.string()),
        ("propensity", pa.float64()),
        ("context", pa.list_(pa.float64())),
        ("provider", pa.string()),
        ("model", pa.string()),
        ("version_emotion", pa.string()),
        ("version_difficulty", pa.string()),
        ("version_personalization", pa.string()),
        ("version_llm_router", pa.string()),
        ("model_versions_json", pa.string()),
        ("timings_ms_json", pa.string()),
        ("degraded", pa.list_(pa.string())),
    ]
)
ANSWERS = pa.schema(
    [
        ("learner_id", pa.string()),
        ("source_id", pa.string()),
        ("turn_id", pa.string()),
        ("item_id", pa.string()),
        ("skill_id", pa.string()),
        ("correct", pa.bool_()),
        ("ts", pa.float64()),
    ]
)
FEEDBACK = pa.schema(
    [
        ("turn_id", pa.string()),
        ("learner_id", pa.string()),
        ("reward", pa.float64()),
        ("item_id", pa.string()),
        ("skill_id", pa.string()),
        ("correct", pa.bool_()),
        ("ts", pa.float64()),
    ]
)
REWARDS = pa.schema(
    [
        ("turn_id", pa.string()),
        ("learner_id", pa.string()),
        ("source", pa.string()),  # "explicit" (feedback) | "answer" (the exercise's answer)
        ("policy", pa.string()),
        ("strategy", pa.string()),
        ("reward", pa.float64()),
        ("ts", pa.float64()),
    ]
)
SCHEMAS: dict[str, pa.Schema] = {
    "turns": TURNS,
    "answers": ANSWERS,
    "feedback": FEEDBACK,
    "rewards": REWARDS,
}
PERSONAL_TEXT = ("message", "reply")  # left null by --without-messages


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def turn_row(turn: TurnRecord, *, without_messages: bool = False) -> dict[str, Any]:
    versions = turn.model_versions
    return {
        "turn_id": turn.turn_id,
        "learner_id": turn.learner_id,
        "session_id": turn.session_id,
        "ts": turn.ts,
        "request_id": turn.request_id,
        "message": None if without_messages else turn.message,
        "reply": None if without_messages else turn.reply,
        "emotion_state": turn.emotion.get("state"),
        "emotion_confidence": _optional_float(turn.emotion.get("confidence")),
        "emotion_json": _json(turn.emotion),
        # {} is what the store keeps when the difficulty stage gave no answer.
        "difficulty_json": _json(turn.difficulty) if turn.difficulty else None,
        "strategy": turn.strategy,
        "propensity": turn.propensity,
        "context": turn.context,
        "provider": turn.provider,
        "model": turn.model,
        "version_emotion": versions.get("emotion"),
        "version_difficulty": versions.get("difficulty"),
        "version_personalization": versions.get("personalization"),
        "version_llm_router": versions.get("llm_router"),
        "model_versions_json": _json(versions),
        "timings_ms_json": _json(turn.timings_ms),
        "degraded": turn.degraded,
    }


ANSWER_SUFFIX = ":answer"  # the ingress's source_id for the answer to a turn's exercise


def answer_row(answer: AnswerRecord) -> dict[str, Any]:
    source = answer.source_id
    turn_id = source[: -len(ANSWER_SUFFIX)] if source.endswith(ANSWER_SUFFIX) else None
    return {**answer.model_dump(), "turn_id": turn_id or None}


def feedback_row(feedback: FeedbackRecord) -> dict[str, Any]:
    return feedback.model_dump()


def reward_row(reward: RewardRecord) -> dict[str, Any]:
    return reward.model_dump()
