"""Calibration of binary probabilities: reliability bins and expected calibration error."""

from __future__ import annotations

import numpy as np


def _binned(probs: np.ndarray, labels: np.ndarray, n_bins: int):
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins).astype(np.float64)
    confidence = np.bincount(bins, weights=p, minlength=n_bins)
    positives = np.bincount(bins, weights=y, minlength=n_bins)
    return p.size, count, confidence, positives


def binary_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """Sum over equal-width bins of |mean probability - positive rate| x the bin's share."""
    n, count, confidence, positives = _binned(probs, labels, n_bins)
    if n == 0:
        return 0.0
    return float(np.abs(confidence - positives).sum() / n)


def reliability(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> dict:
    """ECE and, per non-empty bin, its range, mean probability, positive rate and count."""
    n, count, confidence, positives = _binned(probs, labels, n_bins)
    rows = [
        {
            "low": round(i / n_bins, 4),
            "high": round((i + 1) / n_bins, 4),
            "mean_p": float(confidence[i] / count[i]),
            "positive_rate": float(positives[i] / count[i]),
            "count": int(count[i]),
        }
        for i in range(n_bins)
        if count[i] > 0
    ]
    return {"ece": binary_ece(probs, labels, n_bins), "n_bins": n_bins, "bins": rows}
