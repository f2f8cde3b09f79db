"""From GoEmotions' 28 labels to the tutor's 8 learning states, and to Ekman's 7 groups.

Both mappings are plain data. ``STATE_WEIGHTS`` gives, for each learning state, weights over the
GoEmotions labels; every label's weights over the states sum to 1, so a label's score is shared
out, never lost or counted twice. ``EKMAN_GROUPS`` is the standard grouping that GoEmotions'
``ekman/`` files use, in their ``labels.txt`` order; it serves evaluation only.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from models.vocab import GOEMOTIONS_LABELS, LEARNING_STATES

STATE_WEIGHTS: Final[dict[str, dict[str, float]]] = {
    "frustrated": {"anger": 1.0, "annoyance": 1.0, "disgust": 1.0, "disapproval": 1.0},
    "confused": {"confusion": 1.0},
    "curious": {"curiosity": 1.0, "surprise": 0.5},
    "engaged": {
        "admiration": 1.0,
        "amusement": 1.0,
        "approval": 1.0,
        "caring": 1.0,
        "desire": 1.0,
        "excitement": 1.0,
        "gratitude": 1.0,
        "joy": 1.0,
        "love": 1.0,
        "optimism": 1.0,
    },
    "anxious": {"fear": 1.0, "nervousness": 1.0, "embarrassment": 1.0},
    "breakthrough": {"realization": 1.0, "relief": 1.0, "pride": 1.0, "surprise": 0.5},
    "discouraged": {"sadness": 1.0, "disappointment": 1.0, "grief": 1.0, "remorse": 1.0},
    "neutral": {"neutral": 1.0},
}

# Ekman's grouping as in GoEmotions' ekman_mapping.json (plus neutral), in the order of the
# dataset's ekman/labels.txt: label id i of the ekman/ files is EKMAN_LABELS[i].
EKMAN_GROUPS: Final[dict[str, tuple[str, ...]]] = {
    "anger": ("anger", "annoyance", "disapproval"),
    "disgust": ("disgust",),
    "fear": ("fear", "nervousness"),
    "joy": (
        "admiration", "amusement", "approval", "caring", "desire", "excitement", "gratitude",
        "joy", "love", "optimism", "pride", "relief",
    ),
    "neutral": ("neutral",),
    "sadness": ("disappointment", "embarrassment", "grief", "remorse", "sadness"),
    "surprise": ("confusion", "curiosity", "realization", "surprise"),
}  # fmt: skip
EKMAN_LABELS: Final[tuple[str, ...]] = tuple(EKMAN_GROUPS)

NEUTRAL_STATE: Final[str] = "neutral"
# Below this total (summed sigmoid scores) a row carries no signal: all mass goes to neutral.
_MIN_TOTAL = 1e-6


def state_matrix() -> np.ndarray:
    """The mapping as a [28, 8] matrix: row = GoEmotions label, column = learning state."""
    matrix = np.zeros((len(GOEMOTIONS_LABELS), len(LEARNING_STATES)), dtype=np.float64)
    label_index = {label: i for i, label in enumerate(GOEMOTIONS_LABELS)}
    for j, state in enumerate(LEARNING_STATES):
        for label, weight in STATE_WEIGHTS[state].items():
            matrix[label_index[label], j] = weight
    # Normalise each label's row so that its weights sum to 1 (surprise: 0.5 + 0.5 already).
    return matrix / matrix.sum(axis=1, keepdims=True)


_STATE_MATRIX: Final[np.ndarray] = state_matrix()
_NEUTRAL_INDEX: Final[int] = LEARNING_STATES.index(NEUTRAL_STATE)


def states_from_scores(scores: np.ndarray) -> np.ndarray:
    """Per-label scores [n, 28] (e.g. sigmoids) -> a distribution over the 8 states [n, 8].

    Each row sums to 1; a row whose scores are all ~0 puts its whole mass on ``neutral``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(GOEMOTIONS_LABELS):
        raise ValueError(
            f"expected scores of shape [n, {len(GOEMOTIONS_LABELS)}]; got {scores.shape}"
        )
    raw = np.clip(scores, 0.0, None) @ _STATE_MATRIX
    total = raw.sum(axis=1, keepdims=True)
    empty = total[:, 0] < _MIN_TOTAL
    states = raw / np.where(empty[:, None], 1.0, total)
    states[empty] = 0.0
    states[empty, _NEUTRAL_INDEX] = 1.0
    return states


def ekman_index() -> list[list[int]]:
    """For each Ekman label (in ``EKMAN_LABELS`` order), the GoEmotions label ids it groups."""
    label_index = {label: i for i, label in enumerate(GOEMOTIONS_LABELS)}
    return [[label_index[label] for label in members] for members in EKMAN_GROUPS.values()]


# Weight of a turn one step older in a learner's emotion trend (a half-life of ~3 turns).
EMOTION_TREND_DECAY = 0.8


def emotion_trend(
    distributions: list[dict[str, float]], *, decay: float = EMOTION_TREND_DECAY
) -> dict[str, float]:
    """Decayed average of the turns' state distributions, newest weighted most."""
    totals = dict.fromkeys(LEARNING_STATES, 0.0)
    weight_sum = 0.0
    for age, states in enumerate(reversed(distributions)):
        weight = decay**age
        weight_sum += weight
        for state in LEARNING_STATES:
            totals[state] += weight * float(states.get(state, 0.0))
    if weight_sum == 0:
        return totals
    return {state: round(v / weight_sum, 4) for state, v in totals.items()}
