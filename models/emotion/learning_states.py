"""From GoEmotions' 28 labels to the tutor's 8 learning states, and to Ekman's 7 groups.

Both mappings are plain data. ``STATE_WEIGHTS`` gives, for each learning state, weights over the
GoEmotions labels; every label's weights over the states sum to 1, so a label's score is shared
out, never lost or counted twice. ``EKMAN_GROUPS`` is the standard grouping that GoEmotions'
``ekman/`` files use, in their ``labels.txt`` order; it serves evaluation only.

``states_from_scores`` has two rules:

* with the model's per-label ``thresholds`` (the calibrated rule, what the tutor should use):
  each score is divided by its label's tuned threshold, so a label at its threshold counts 1
  whatever its base rate in GoEmotions (in v1, a raw 0.15 for ``realization`` counts as a raw
  0.35 for ``neutral``); the ratios are shared out over the states by ``STATE_WEIGHTS`` and
  summed; each state's sum is multiplied by its ``STATE_GAINS`` entry; the result is normalised
  to a distribution. The gains were tuned on ``tests/data/learner_messages_dev.jsonl`` only
  (coarse coordinate search over 0.35..2.8, four gains free: in 5-fold cross-validation on dev,
  freeing all eight overfit), and correct three things GoEmotions gets wrong on
  learner text: ``engaged`` pools ten positive labels and so wins too often (damped to 0.5);
  ``neutral`` fires on nearly every short message (0.7); ``anxious`` (fear, nervousness) and
  ``breakthrough`` (realization, relief, pride) rest on rare, weakly scored labels (2.8, 2.0).
* without thresholds (the legacy share-out): raw scores shared out and summed, no gains.

``pipelines.emotion.evaluate_learning_states`` measures both on the labelled learner messages.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from models.common.vocab import GOEMOTIONS_LABELS, LEARNING_STATES

STATE_WEIGHTS: Final[dict[str, dict[str, float]]] = {
    # disapproval is shared: learners aim it at the task ("this is rigged") or at themselves
    # ("this subject isn't for people like me").
    "frustrated": {"anger": 1.0, "annoyance": 1.0, "disgust": 1.0, "disapproval": 0.5},
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
    "discouraged": {
        "sadness": 1.0,
        "disappointment": 1.0,
        "grief": 1.0,
        "remorse": 1.0,
        "disapproval": 0.5,
    },
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

# Per-state multipliers of the calibrated rule (scores / thresholds), tuned on the dev learner
# messages only; see the module docstring. A state not listed keeps 1.0.
STATE_GAINS: Final[dict[str, float]] = {
    "frustrated": 1.0,
    "confused": 1.0,
    "curious": 1.0,
    "engaged": 0.5,
    "anxious": 2.8,
    "breakthrough": 2.0,
    "discouraged": 1.0,
    "neutral": 0.7,
}

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


def state_gains() -> np.ndarray:
    """``STATE_GAINS`` as a vector in ``LEARNING_STATES`` order."""
    return np.array([STATE_GAINS[state] for state in LEARNING_STATES], dtype=np.float64)


_STATE_GAINS: Final[np.ndarray] = state_gains()


def states_from_scores(
    scores: np.ndarray, thresholds: np.ndarray | list[float] | None = None
) -> np.ndarray:
    """Per-label scores [n, 28] (e.g. sigmoids) -> a distribution over the 8 states [n, 8].

    With ``thresholds`` (the model's 28 tuned per-label thresholds): the calibrated rule, scores
    divided by thresholds, shared out by ``STATE_WEIGHTS``, scaled by ``STATE_GAINS``. Without:
    the legacy share-out of the raw scores. Each row sums to 1; a row whose scores are all ~0
    puts its whole mass on ``neutral``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(GOEMOTIONS_LABELS):
        raise ValueError(
            f"expected scores of shape [n, {len(GOEMOTIONS_LABELS)}]; got {scores.shape}"
        )
    scores = np.clip(scores, 0.0, None)
    if thresholds is None:
        raw = scores @ _STATE_MATRIX
    else:
        thresholds = np.asarray(thresholds, dtype=np.float64)
        if thresholds.shape != (len(GOEMOTIONS_LABELS),) or (thresholds <= 0).any():
            raise ValueError(
                f"expected {len(GOEMOTIONS_LABELS)} positive thresholds; got {thresholds}"
            )
        raw = (scores / thresholds) @ _STATE_MATRIX * _STATE_GAINS
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


def calibrate_states(states: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scale a state distribution: p_i^(1/T), renormalised.

    The argmax never changes; T < 1 sharpens, T > 1 softens, T = 1 is the identity. Fitted on
    the learner dev set (``fit_state_temperature``) it makes ``confidence`` a calibrated
    probability of the top state being right.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    logp = np.log(np.clip(np.asarray(states, dtype=np.float64), 1e-12, None)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def state_nll(states: np.ndarray, gold: np.ndarray) -> float:
    """Mean negative log-likelihood of the gold state indices under the distributions."""
    picked = np.asarray(states)[np.arange(len(gold)), np.asarray(gold)]
    return float(-np.log(np.clip(picked, 1e-12, None)).mean())


def fit_state_temperature(
    states: np.ndarray, gold: np.ndarray, *, lo: float = 0.05, hi: float = 5.0, steps: int = 400
) -> float:
    """The temperature minimising the NLL of the gold states (a 1-D grid over log T)."""
    grid = np.exp(np.linspace(np.log(lo), np.log(hi), steps))
    losses = [state_nll(calibrate_states(states, t), gold) for t in grid]
    return float(grid[int(np.argmin(losses))])


def top_state_ece(states: np.ndarray, gold: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error of the top state's probability (equal-width bins)."""
    states = np.asarray(states, dtype=np.float64)
    confidence = states.max(axis=1)
    correct = (states.argmax(axis=1) == np.asarray(gold)).astype(np.float64)
    bins = np.clip((confidence * n_bins).astype(int), 0, n_bins - 1)
    gap = np.abs(
        np.bincount(bins, weights=confidence, minlength=n_bins)
        - np.bincount(bins, weights=correct, minlength=n_bins)
    )
    return float(gap.sum() / len(confidence)) if len(confidence) else 0.0
