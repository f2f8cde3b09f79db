"""The personalization bandit's context: measured quantities about the learner, as a vector.

Every feature is bounded to about [0, 1] so that one ridge prior fits them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.common.vocab import LEARNING_STATES

FEATURE_NAMES: tuple[str, ...] = (
    "bias",
    *(f"state_{s}" for s in LEARNING_STATES),
    "p_correct_next",
    "mastery_mean",
    "recent_accuracy",
    "streak",
    "session_turns",
    "minutes_since_last_turn",
)
CONTEXT_DIM = len(FEATURE_NAMES)
RECENT_WINDOW = 10
SESSION_BREAK_S = 30 * 60.0  # a longer pause between turns starts a new session


@dataclass(frozen=True)
class LearnerActivity:
    """What the store knows of the learner's recent activity, as the bandit needs it."""

    recent_correct: Sequence[bool] = ()  # chronological, newest last
    session_turns: int = 0
    seconds_since_last_turn: float | None = None


def _streak(recent_correct: Sequence[bool]) -> float:
    """Signed run length of the latest outcomes: +3 after three rights, -2 after two wrongs."""
    if not recent_correct:
        return 0.0
    last = recent_correct[-1]
    run = 0
    for outcome in reversed(recent_correct):
        if outcome != last:
            break
        run += 1
    return float(run if last else -run)


def build_context(
    *,
    states: Mapping[str, float],
    p_correct_next: float | None,
    mastery_mean: float | None,
    activity: LearnerActivity,
) -> np.ndarray:
    recent = list(activity.recent_correct)[-RECENT_WINDOW:]
    recent_accuracy = float(np.mean(recent)) if recent else 0.5
    minutes = activity.seconds_since_last_turn
    vector = [
        1.0,
        *(float(states.get(s, 0.0)) for s in LEARNING_STATES),
        0.5 if p_correct_next is None else float(p_correct_next),
        0.5 if mastery_mean is None else float(mastery_mean),
        recent_accuracy,
        float(np.clip(_streak(recent) / 5.0, -1.0, 1.0)),
        float(min(activity.session_turns, 20) / 20.0),
        # log scale: the gap between 1 and 10 minutes matters more than between 60 and 70.
        0.0 if minutes is None else float(min(np.log1p(minutes / 60.0) / np.log1p(60.0), 1.0)),
    ]
    context = np.asarray(vector, dtype=np.float64)
    assert context.shape == (CONTEXT_DIM,), f"context has {context.shape}, want {CONTEXT_DIM}"
    return context


def learner_pace(turn_times: Sequence[float]) -> tuple[float | None, int]:
    """(median seconds between turns within a session, number of sessions).

    Pauses longer than SESSION_BREAK_S split sessions and are left out of the median: a
    learner's pace is how fast they work, not how often they come back.
    """
    times = sorted(turn_times)
    if not times:
        return None, 0
    gaps = np.diff(times)
    in_session = gaps[gaps <= SESSION_BREAK_S]
    sessions = 1 + int(np.sum(gaps > SESSION_BREAK_S))
    return (float(np.median(in_session)) if in_session.size else None), sessions
