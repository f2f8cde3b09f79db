"""Reliability bins and expected calibration error of binary probabilities."""

import numpy as np
import pytest

from models.common.calibration import binary_ece, reliability


def test_perfectly_calibrated_probabilities_have_zero_ece():
    probs = np.array([0.25] * 4 + [0.75] * 4)
    labels = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert binary_ece(probs, labels) == pytest.approx(0.0)


def test_ece_is_the_weighted_gap_per_bin():
    probs = np.array([0.9, 0.9, 0.1, 0.1])
    labels = np.array([0, 0, 0, 0])  # the 0.9 bin is off by 0.9, the 0.1 bin by 0.1
    assert binary_ece(probs, labels) == pytest.approx(0.5 * 0.9 + 0.5 * 0.1)


def test_reliability_reports_non_empty_bins_with_counts():
    rng = np.random.default_rng(0)
    probs = rng.uniform(size=20_000)
    labels = rng.uniform(size=20_000) < probs  # calibrated by construction
    report = reliability(probs, labels, n_bins=10)
    assert report["ece"] < 0.02
    assert sum(b["count"] for b in report["bins"]) == 20_000
    for b in report["bins"]:
        assert b["low"] <= b["mean_p"] <= b["high"]
        assert b["positive_rate"] == pytest.approx(b["mean_p"], abs=0.05)
    assert reliability(np.array([]), np.array([]))["bins"] == []
