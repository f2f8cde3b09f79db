"""Calibration of binary probabilities: reliability bins, expected calibration error, and the
single temperature that calibrates a model's logits."""

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


def bce_at_temperature(logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    """Mean binary cross-entropy of ``sigmoid(logits / temperature)`` against the targets."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    y = np.asarray(targets, dtype=bool)
    # log(1 + exp(-|z|)) + max(z, 0) - y z: the stable form of BCE-with-logits.
    loss = np.logaddexp(0.0, -np.abs(z)) + np.maximum(z, 0.0) - np.where(y, z, 0.0)
    return float(loss.mean())


def fit_temperature(
    logits: np.ndarray, targets: np.ndarray, lo: float = 0.05, hi: float = 20.0
) -> float:
    """The single temperature T > 0 minimising dev BCE of sigmoid(logits / T).

    Golden-section search over log T (BCE is unimodal in T for fixed logits).
    """
    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - g * (b - a), a + g * (b - a)
    fc = bce_at_temperature(logits, targets, float(np.exp(c)))
    fd = bce_at_temperature(logits, targets, float(np.exp(d)))
    for _ in range(80):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = bce_at_temperature(logits, targets, float(np.exp(c)))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = bce_at_temperature(logits, targets, float(np.exp(d)))
    return float(np.exp((a + b) / 2.0))
