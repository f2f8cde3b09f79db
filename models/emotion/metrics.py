"""Metrics for the emotion model, shared by the training and evaluation pipelines.

Pure numpy, no I/O. Scores are per-label probabilities [n, 28]; targets are multi-hot [n, 28].

Ekman figures (7 groups) are computed by *max-pooling*: a group's score is the max of its
member labels' scores, and each group gets its own threshold, tuned on dev like the 28 labels'.
``ekman_from_predictions`` gives the other common protocol (a group is predicted when any of its
labels is predicted with the 28-label thresholds); both are reported, under distinct names.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.common.calibration import binary_ece
from models.common.vocab import GOEMOTIONS_LABELS
from models.emotion.learning_states import EKMAN_LABELS, ekman_index

THRESHOLD_GRID: np.ndarray = np.round(np.arange(0.05, 0.951, 0.05), 2)
EKMAN_METHOD = "max-pooled label scores per Ekman group, per-group threshold tuned on dev"


def f1_per_label(predicted: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-column F1 of boolean predictions against multi-hot targets; 0 where undefined."""
    predicted = np.asarray(predicted, dtype=bool)
    targets = np.asarray(targets, dtype=bool)
    tp = (predicted & targets).sum(axis=0).astype(np.float64)
    fp = (predicted & ~targets).sum(axis=0)
    fn = (~predicted & targets).sum(axis=0)
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def micro_f1(predicted: np.ndarray, targets: np.ndarray) -> float:
    predicted = np.asarray(predicted, dtype=bool)
    targets = np.asarray(targets, dtype=bool)
    tp = float((predicted & targets).sum())
    denom = 2 * tp + float((predicted & ~targets).sum()) + float((~predicted & targets).sum())
    return 2 * tp / denom if denom > 0 else 0.0


def tune_thresholds(
    scores: np.ndarray, targets: np.ndarray, grid: np.ndarray = THRESHOLD_GRID
) -> np.ndarray:
    """Per column, the grid threshold maximising that column's F1 (ties: the lowest one)."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=bool)
    # [n, labels, thresholds] at once: 5.4k x 28 x 19 booleans is small.
    predicted = scores[:, :, None] >= grid[None, None, :]
    truth = targets[:, :, None]
    tp = (predicted & truth).sum(axis=0).astype(np.float64)
    fp = (predicted & ~truth).sum(axis=0)
    fn = (~predicted & truth).sum(axis=0)
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return grid[np.argmax(f1, axis=1)].astype(np.float64)


def ekman_scores(scores: np.ndarray) -> np.ndarray:
    """[n, 28] label scores -> [n, 7] Ekman scores: the max over each group's labels."""
    scores = np.asarray(scores)
    return np.stack([scores[:, idx].max(axis=1) for idx in ekman_index()], axis=1)


def ekman_targets(targets: np.ndarray) -> np.ndarray:
    """[n, 28] multi-hot -> [n, 7] multi-hot: a group is present when any of its labels is."""
    targets = np.asarray(targets, dtype=bool)
    return np.stack([targets[:, idx].any(axis=1) for idx in ekman_index()], axis=1)


def ekman_from_predictions(predicted: np.ndarray) -> np.ndarray:
    """[n, 28] boolean predictions -> [n, 7]: a group is predicted when any member is."""
    return ekman_targets(predicted)


def evaluate_scores(
    scores: np.ndarray,
    targets: np.ndarray,
    thresholds: np.ndarray,
    ekman_thresholds: np.ndarray,
) -> dict[str, Any]:
    """All the figures for one split, given thresholds chosen elsewhere (on dev)."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=bool)
    predicted = scores >= np.asarray(thresholds)[None, :]
    per_label = f1_per_label(predicted, targets)
    at_half = f1_per_label(scores >= 0.5, targets)

    e_targets = ekman_targets(targets)
    e_predicted = ekman_scores(scores) >= np.asarray(ekman_thresholds)[None, :]
    e_per_label = f1_per_label(e_predicted, e_targets)
    e_grouped = f1_per_label(ekman_from_predictions(predicted), e_targets)

    support = targets.sum(axis=0)
    return {
        "n": int(len(scores)),
        "macro_f1": float(per_label.mean()),
        "micro_f1": micro_f1(predicted, targets),
        "macro_f1_at_0.5": float(at_half.mean()),
        "ekman_macro_f1": float(e_per_label.mean()),
        "ekman_micro_f1": micro_f1(e_predicted, e_targets),
        "ekman_macro_f1_grouped_predictions": float(e_grouped.mean()),
        "ece": expected_calibration_error(scores, targets),
        "per_label_f1": {
            label: round(float(v), 4) for label, v in zip(GOEMOTIONS_LABELS, per_label, strict=True)
        },
        "per_label_support": {
            label: int(v) for label, v in zip(GOEMOTIONS_LABELS, support, strict=True)
        },
        "ekman_per_label_f1": {
            label: round(float(v), 4) for label, v in zip(EKMAN_LABELS, e_per_label, strict=True)
        },
    }


def summarize_per_label(per_label_f1: dict[str, float], k: int = 5) -> dict[str, Any]:
    """Best and worst labels by F1, and the spread: a short line for logs and reports."""
    ranked = sorted(per_label_f1.items(), key=lambda kv: kv[1], reverse=True)
    values = np.array([v for _, v in ranked])
    return {
        "best": ranked[:k],
        "worst": ranked[-k:],
        "median": float(np.median(values)),
        "min": float(values.min()),
        "max": float(values.max()),
    }


# -- calibration ----------------------------------------------------------------------------

ECE_BINS = 15
ECE_METHOD = (
    f"expected calibration error over every (text, label) score as a binary probability, "
    f"{ECE_BINS} equal-width bins: sum over bins of |mean score - positive rate| x bin share"
)


def expected_calibration_error(
    scores: np.ndarray, targets: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """ECE of multi-label scores [n, k], each (row, label) counted as one binary prediction."""
    return binary_ece(scores, np.asarray(targets, dtype=bool), n_bins)
