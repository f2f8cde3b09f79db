"""The personalization bandit's context: measured quantities about the learner, as a vector.

Every feature is bounded to about [0, 1] so that one ridge prior fits them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
    recommended_p_correct: float | None,
    candidate_p_correct: Sequence[float],
    answers: Sequence[bool],
    session_turns: int,
    seconds_since_last_turn: float | None,
) -> np.ndarray:
    """The bandit's context for one turn, from what the tutor knows when it picks a strategy.

    The one place the context is made: serving (``deployments.tutoring.turn_runner``) and the
    learner simulator (``pipelines.personalization.simulator``) both call it, so the policy is
    judged offline on exactly the features it sees in service.

    ``states``: the emotion distribution over the learning states; ``recommended_p_correct``:
    P(correct) of the exercise the difficulty model recommends, ``candidate_p_correct``: of every
    candidate (none: no exercise this turn); ``answers``: the learner's answers so far, oldest
    first (only the last ``RECENT_WINDOW`` count); ``session_turns``: earlier turns in this
    session; ``seconds_since_last_turn``: None for a first turn.
    """
    recent = list(answers)[-RECENT_WINDOW:]
    recent_accuracy = float(np.mean(recent)) if recent else 0.5
    mastery_mean = float(np.mean(candidate_p_correct)) if len(candidate_p_correct) else 0.5
    minutes = seconds_since_last_turn
    vector = [
        1.0,
        *(float(states.get(s, 0.0)) for s in LEARNING_STATES),
        0.5 if recommended_p_correct is None else float(recommended_p_correct),
        mastery_mean,
        recent_accuracy,
        float(np.clip(_streak(recent) / 5.0, -1.0, 1.0)),
        float(min(session_turns, 20) / 20.0),
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
