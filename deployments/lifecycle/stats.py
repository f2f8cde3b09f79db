"""The statistics behind the online metrics and the guardrail (distributions from scipy):

- Means get Student-t intervals, and "worse" is Welch's one-sided t-test (unequal variances:
  a canary and its champion see different numbers of learners, and their losses need not
  share a spread). Small samples get the t's honest intervals rather than the normal's
  too-narrow ones.
- Shares (accuracy, error rate, agreement) get Wilson score intervals, which stay inside [0, 1]
  and keep their coverage near 0 and 1 (a 0-error canary is common), where the Wald interval
  collapses to a point.
- Two error rates are compared with the pooled two-proportion z-test.
- AUC gets the Hanley-McNeil (1982) standard error.
- Statistics without a closed-form variance (ECE, total variation distance) get a seeded
  percentile bootstrap, so a report is the same every time it is computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
Z_975 = 1.959963984540054  # the normal's 97.5% point, for the Wilson and Hanley-McNeil intervals
BOOTSTRAP_RESAMPLES = 200


class _Estimate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MeanEstimate(_Estimate):
    """A sample mean with its 95% Student-t interval (None below two observations)."""

    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 for a single observation
    ci_low: float | None = None
    ci_high: float | None = None


class Proportion(_Estimate):
    """A share with its 95% Wilson score interval."""

    n: int
    successes: int
    share: float
    ci_low: float
    ci_high: float


class Interval(_Estimate):
    """A point estimate with a 95% interval from the method named in ``method``."""

    n: int
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    method: str
    se: float | None = None  # where the method gives a standard error (Hanley-McNeil)


# ---- distributions ----------------------------------------------------------------------------


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal."""
    return float(scipy_stats.norm.sf(z))


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (df may be fractional: Welch)."""
    return normal_sf(t) if math.isinf(df) else float(scipy_stats.t.sf(t, df))


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t."""
    return float(scipy_stats.t.ppf(p, df))


# ---- estimates ----------------------------------------------------------------------------------


def mean_estimate(values: Sequence[float]) -> MeanEstimate | None:
    """Mean, sample sd and 95% t interval; None for no values."""
    n = len(values)
    if n == 0:
        return None
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    if n == 1:
        return MeanEstimate(n=1, mean=mean, std=0.0)
    std = float(array.std(ddof=1))
    half = t_quantile(0.5 + CONFIDENCE / 2.0, n - 1) * std / math.sqrt(n)
    return MeanEstimate(n=n, mean=mean, std=std, ci_low=mean - half, ci_high=mean + half)


def wilson(successes: int, n: int) -> Proportion | None:
    """The share successes/n with its 95% Wilson score interval; None for n = 0."""
    if n == 0:
        return None
    share = successes / n
    z2 = Z_975 * Z_975
    centre = (share + z2 / (2 * n)) / (1 + z2 / n)
    half = Z_975 * math.sqrt(share * (1 - share) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return Proportion(
        n=n,
        successes=successes,
        share=share,
        ci_low=max(0.0, centre - half),
        ci_high=min(1.0, centre + half),
    )


def auc_estimate(p: Sequence[float], y: Sequence[bool]) -> Interval | None:
    """ROC AUC (the Mann-Whitney statistic, ties counted half) with the Hanley-McNeil 95%
    interval; None unless both outcomes occur."""
    scores = np.asarray(p, dtype=np.float64)
    labels = np.asarray(y, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    # Average ranks (1-based) with ties sharing their mean rank.
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]
    auc = float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (
        auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)
    ) / (n_pos * n_neg)
    half = Z_975 * math.sqrt(max(variance, 0.0))
    return Interval(
        n=n_pos + n_neg,
        value=auc,
        ci_low=max(0.0, auc - half),
        ci_high=min(1.0, auc + half),
        method="hanley-mcneil",
        se=half / Z_975,
    )


def bootstrap_interval(
    statistic: Callable[[np.random.Generator], float], value: float, n: int
) -> Interval:
    """A percentile interval of ``statistic`` (called once per resample with the generator
    to draw it from), seeded so that the same data always give the same interval."""
    rng = np.random.default_rng(0)
    draws = np.array([statistic(rng) for _ in range(BOOTSTRAP_RESAMPLES)])
    low, high = np.quantile(draws, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return Interval(n=n, value=value, ci_low=float(low), ci_high=float(high), method="bootstrap")


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Half the L1 distance between two distributions over named outcomes."""
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)


def total_variation_estimate(
    counts_p: Mapping[str, int], counts_q: Mapping[str, int]
) -> Interval | None:
    """TV distance between two empirical distributions with a bootstrap interval (each sample
    redrawn from its own counts). Note that the estimate is biased upward for small samples:
    two draws of one distribution are rarely identical."""
    n_p, n_q = sum(counts_p.values()), sum(counts_q.values())
    if n_p == 0 or n_q == 0:
        return None
    keys = sorted(set(counts_p) | set(counts_q))
    share_p = np.array([counts_p.get(k, 0) for k in keys]) / n_p
    share_q = np.array([counts_q.get(k, 0) for k in keys]) / n_q
    value = 0.5 * float(np.abs(share_p - share_q).sum())

    def resample(rng: np.random.Generator) -> float:
        a = rng.multinomial(n_p, share_p) / n_p
        b = rng.multinomial(n_q, share_q) / n_q
        return 0.5 * float(np.abs(a - b).sum())

    return bootstrap_interval(resample, value, n_p + n_q)


# ---- one-sided tests: is the candidate worse? ---------------------------------------------------


def welch_greater(base: MeanEstimate, other: MeanEstimate) -> float | None:
    """One-sided Welch p-value for H1: mean(other) > mean(base). None below two observations
    in either sample."""
    if base.n < 2 or other.n < 2:
        return None
    v_base, v_other = base.std**2 / base.n, other.std**2 / other.n
    diff = other.mean - base.mean
    se2 = v_base + v_other
    if se2 == 0.0:  # both constant: the difference is certain
        return 0.0 if diff > 0 else 1.0
    df = se2 * se2 / (v_base**2 / (base.n - 1) + v_other**2 / (other.n - 1))
    return t_sf(diff / math.sqrt(se2), df)


def paired_greater(differences: MeanEstimate) -> float | None:
    """One-sided paired t p-value for H1: the mean difference is > 0."""
    if differences.n < 2:
        return None
    if differences.std == 0.0:
        return 0.0 if differences.mean > 0 else 1.0
    t = differences.mean / (differences.std / math.sqrt(differences.n))
    return t_sf(t, differences.n - 1)


def proportion_greater(base: Proportion, other: Proportion) -> float | None:
    """One-sided pooled two-proportion z p-value for H1: share(other) > share(base)."""
    pooled = (base.successes + other.successes) / (base.n + other.n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / base.n + 1 / other.n))
    diff = other.share - base.share
    if se == 0.0:
        return 0.0 if diff > 0 else 1.0
    return normal_sf(diff / se)


def interval_less(base: Interval, other: Interval) -> float | None:
    """One-sided z p-value for H1: other.value < base.value, for independent estimates with
    standard errors (AUCs of two versions on different learners)."""
    if base.se is None or other.se is None:
        return None
    se = math.hypot(base.se, other.se)
    diff = base.value - other.value
    if se == 0.0:
        return 0.0 if diff > 0 else 1.0
    return normal_sf(diff / se)
