"""The statistics give the known intervals and agree with scikit-learn's AUC."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from deployments.lifecycle.stats import (
    auc_estimate,
    mean_estimate,
    paired_greater,
    proportion_greater,
    total_variation,
    total_variation_estimate,
    welch_greater,
    wilson,
)


def test_mean_interval_is_students_t():
    values = [0.2, 0.5, 0.9, 0.4, 0.3]
    estimate = mean_estimate(values)
    low, high = scipy_stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=scipy_stats.sem(values)
    )
    assert (estimate.n, estimate.ci_low, estimate.ci_high) == (
        5,
        pytest.approx(low),
        pytest.approx(high),
    )
    assert mean_estimate([]) is None
    single = mean_estimate([0.7])
    assert (single.mean, single.std, single.ci_low) == (0.7, 0.0, None)


def test_wilson_interval_known_values():
    # Wilson (1927) for 0 of 10: [0, 0.2775]; for 5 of 10: [0.2366, 0.7634].
    none = wilson(0, 10)
    assert (none.share, none.ci_low, none.ci_high) == (0.0, 0.0, pytest.approx(0.2775, abs=1e-4))
    half = wilson(5, 10)
    assert (half.ci_low, half.ci_high) == (
        pytest.approx(0.2366, abs=1e-4),
        pytest.approx(0.7634, abs=1e-4),
    )
    assert wilson(0, 0) is None


def test_auc_matches_scikit_learn_with_ties():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.6
    p = np.round(np.clip(0.5 + 0.2 * (y - 0.5) + rng.normal(0, 0.2, 300), 0, 1), 1)  # many ties
    estimate = auc_estimate(p.tolist(), y.tolist())
    assert estimate.value == pytest.approx(metrics.roc_auc_score(y, p))
    assert estimate.ci_low < estimate.value < estimate.ci_high
    assert auc_estimate([0.3, 0.4], [True, True]) is None  # one class: undefined


def test_auc_hanley_mcneil_standard_error():
    # Hanley & McNeil (1982), eq. 2 with Q1 = A/(2-A), Q2 = 2A^2/(1+A): for A = 0.9 and 50 of
    # each class, (0.09 + 49 * 0.00818 + 49 * 0.04263) / 2500 -> SE 0.0321.
    a = 0.9
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    expected = math.sqrt((a * (1 - a) + 49 * (q1 - a * a) + 49 * (q2 - a * a)) / 2500)
    # 50 positives over 50 negatives, arranged so that exactly 90% of pairs are ordered.
    pos = [1.0] * 45 + [0.0] * 5
    neg = [0.5] * 50
    estimate = auc_estimate(pos + neg, [True] * 50 + [False] * 50)
    assert estimate.value == pytest.approx(0.9)
    assert estimate.se == pytest.approx(expected)
    assert expected == pytest.approx(0.0321, abs=1e-4)


def test_welch_one_sided_matches_scipy():
    rng = np.random.default_rng(2)
    base, other = rng.normal(0.5, 0.2, 40), rng.normal(0.6, 0.4, 25)
    expected = scipy_stats.ttest_ind(other, base, equal_var=False, alternative="greater").pvalue
    assert welch_greater(mean_estimate(base.tolist()), mean_estimate(other.tolist())) == (
        pytest.approx(expected, rel=1e-7)
    )


def test_paired_one_sided_matches_scipy():
    rng = np.random.default_rng(3)
    diffs = rng.normal(0.05, 0.3, 60)
    expected = scipy_stats.ttest_1samp(diffs, 0.0, alternative="greater").pvalue
    assert paired_greater(mean_estimate(diffs.tolist())) == pytest.approx(expected, rel=1e-7)


def test_two_proportion_z():
    # 20/200 against 10/200: pooled p = 0.075, z = 0.05 / sqrt(0.075 * 0.925 * 0.01) = 1.899.
    p = proportion_greater(wilson(10, 200), wilson(20, 200))
    assert p == pytest.approx(scipy_stats.norm.sf(0.05 / math.sqrt(0.075 * 0.925 * 0.01)))
    assert proportion_greater(wilson(0, 100), wilson(0, 100)) == 1.0


def test_total_variation():
    assert total_variation({"a": 0.5, "b": 0.5}, {"a": 1.0}) == 0.5
    estimate = total_variation_estimate({"a": 50, "b": 50}, {"a": 100})
    assert estimate.value == 0.5 and estimate.ci_low <= 0.5 <= estimate.ci_high
    assert total_variation_estimate({"a": 3}, {}) is None
    # Seeded: the same counts give the same interval.
    assert estimate == total_variation_estimate({"a": 50, "b": 50}, {"a": 100})
