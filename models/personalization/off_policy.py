"""Off-policy evaluation: a candidate strategy policy's mean reward, estimated from logged turns.

A logged turn has the context x, the arm a the logging policy chose and its propensity
p0 = P(a | x). Inverse propensity scoring (IPS) reweighs the logged rewards by w = pi(a|x) / p0;
the doubly robust (DR) estimate adds a reward model q(x, a) as a control variate: still unbiased
when p0 is exact, and of smaller variance the better q is. q is cross-fitted (a row's prediction
comes from a model fitted on the other folds) so that its errors do not correlate with the row.

The work splits so that a distributed job can run it over batches: fit the reward model on all
rows, compute ``row_terms`` per batch, reduce them to additive ``TermSums`` and call
``TermSums.estimates``. Where the true values are known (a simulator's log), ``TruthCheck``
measures each estimate's error against them. Pure numpy: no Ray, no file I/O.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from models.personalization.bandit import ArmStatistics, LinearThompsonSampling, ThompsonConfig


class TargetPolicy(Protocol):
    def action_probabilities(self, contexts: np.ndarray) -> np.ndarray:
        """[n, arms] probability of each arm (rows sum to 1) for contexts [n, d]."""


class UniformPolicy:
    def __init__(self, arms: Sequence[str]) -> None:
        self.arms = tuple(arms)

    def action_probabilities(self, contexts: np.ndarray) -> np.ndarray:
        return np.full((len(contexts), len(self.arms)), 1.0 / len(self.arms))


class FixedPolicy:
    def __init__(self, arms: Sequence[str], arm: str) -> None:
        if arm not in arms:
            raise ValueError(f"unknown arm {arm!r}: the arms are {', '.join(arms)}")
        self.arms = tuple(arms)
        self.index = self.arms.index(arm)

    def action_probabilities(self, contexts: np.ndarray) -> np.ndarray:
        probs = np.zeros((len(contexts), len(self.arms)))
        probs[:, self.index] = 1.0
        return probs


def _bandit(arms, stats: Mapping[str, ArmStatistics], config) -> LinearThompsonSampling:
    if not stats:
        raise ValueError("this policy needs per-arm statistics, got none")
    bandit = LinearThompsonSampling(arms, dim=len(next(iter(stats.values())).b), config=config)
    bandit.update_statistics(stats)
    return bandit


class GreedyLinearPolicy:
    """The arm of highest posterior-mean reward; tied arms share the probability equally."""

    def __init__(self, arms, stats: Mapping[str, ArmStatistics], config=None) -> None:
        self.arms = tuple(arms)
        self._bandit = _bandit(self.arms, stats, config)

    def action_probabilities(self, contexts: np.ndarray) -> np.ndarray:
        means = self._bandit.expected_rewards(np.asarray(contexts, dtype=np.float64))
        best = np.isclose(means, means.max(axis=1, keepdims=True), rtol=0.0, atol=1e-12)
        return best / best.sum(axis=1, keepdims=True)


class ThompsonPolicy:
    """Linear Thompson sampling as served: P(arm) = how often it wins a posterior draw."""

    def __init__(self, arms, stats, config=None, samples: int = 512, seed: int = 0) -> None:
        self.arms = tuple(arms)
        self.samples = samples
        self.seed = seed
        self._bandit = _bandit(self.arms, stats, config)

    def action_probabilities(self, contexts: np.ndarray) -> np.ndarray:
        contexts = np.ascontiguousarray(contexts, dtype=np.float64)
        probs = np.empty((len(contexts), len(self.arms)))
        for i, context in enumerate(contexts):
            # Seeded by the row itself: its estimate is the same however the rows are batched.
            rng = np.random.default_rng([self.seed, zlib.crc32(context.tobytes())])
            probs[i] = self._bandit.action_probabilities(context, rng, self.samples)
        return probs


@dataclass(frozen=True)
class PolicyInputs:
    """What a policy builder may draw on."""

    arms: tuple[str, ...]
    stats: Mapping[str, ArmStatistics] | None = None
    config: ThompsonConfig = ThompsonConfig()
    samples: int = 512  # Monte-Carlo draws per row for lin_ts
    seed: int = 0


def _fixed(inputs: PolicyInputs, arm: str | None) -> FixedPolicy:
    if not arm:
        raise ValueError("the fixed policy needs its arm: fixed:<arm>")
    return FixedPolicy(inputs.arms, arm)


# name -> builder(inputs, the text after "name:" or None)
POLICY_BUILDERS: dict[str, Callable[[PolicyInputs, str | None], TargetPolicy]] = {
    "uniform": lambda inputs, _: UniformPolicy(inputs.arms),
    "fixed": _fixed,
    "greedy": lambda inputs, _: GreedyLinearPolicy(inputs.arms, inputs.stats, inputs.config),
    "lin_ts": lambda inputs, _: ThompsonPolicy(
        inputs.arms, inputs.stats, inputs.config, inputs.samples, inputs.seed
    ),
}


def build_policy(spec: str, inputs: PolicyInputs) -> TargetPolicy:
    """A policy from ``name`` or ``name:argument`` (``fixed:quiz``)."""
    name, _, argument = spec.partition(":")
    if name not in POLICY_BUILDERS:
        raise ValueError(f"unknown policy {name!r}: known are {', '.join(POLICY_BUILDERS)}")
    return POLICY_BUILDERS[name](inputs, argument or None)


@dataclass(frozen=True, eq=False)  # arrays: == would be ambiguous
class LoggedTurns:
    """Logged turns as arrays, checked on construction."""

    contexts: np.ndarray  # [n, d]
    actions: np.ndarray  # [n] arm indices
    propensities: np.ndarray  # [n] P(action | context) under the logging policy
    rewards: np.ndarray  # [n]

    def __post_init__(self) -> None:
        for name in ("contexts", "actions", "propensities", "rewards"):
            dtype = np.int64 if name == "actions" else np.float64
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dtype))
        n = len(self.actions)
        if n == 0:
            raise ValueError("no logged turns to evaluate")
        for name in ("actions", "propensities", "rewards"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, want ({n},)")
        if self.contexts.ndim != 2 or len(self.contexts) != n:
            raise ValueError(f"contexts have shape {self.contexts.shape}, want ({n}, d)")
        bad = ~((self.propensities > 0) & (self.propensities <= 1))  # catches NaN too
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(
                f"propensities must be in (0, 1]: row {row} has {self.propensities[row]!r} "
                f"({int(bad.sum())} such rows)"
            )
        if not np.isfinite(self.rewards).all():
            raise ValueError("rewards must be finite")

    def __len__(self) -> int:
        return len(self.actions)

    def check_target(self, target_probs: np.ndarray) -> None:
        """Raise ValueError unless these are one probability row per turn, over every arm."""
        if target_probs.ndim != 2 or len(target_probs) != len(self):
            raise ValueError(f"target probabilities {target_probs.shape}, want ({len(self)}, arms)")
        if self.actions.min() < 0 or self.actions.max() >= target_probs.shape[1]:
            raise ValueError(f"actions must be arm indices in [0, {target_probs.shape[1]})")
        if (target_probs < 0).any() or not np.allclose(target_probs.sum(axis=1), 1.0, atol=1e-6):
            raise ValueError("target probabilities must be non-negative rows that sum to 1")


def fit_arm_statistics(log: LoggedTurns, arms: Sequence[str]) -> dict[str, ArmStatistics]:
    """Per-arm additive statistics (sum x x^T, sum r x) of the logged turns, as the store keeps."""
    stats = {}
    for index, arm in enumerate(arms):
        x, r = log.contexts[log.actions == index], log.rewards[log.actions == index]
        stats[arm] = ArmStatistics(a=x.T @ x, b=x.T @ r, n=len(r), reward_sum=float(r.sum()))
    return stats


def random_folds(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """[n] balanced fold ids in random order."""
    return np.random.default_rng(seed).permutation(np.arange(n) % folds)


def folds_from_keys(keys: Iterable[str], folds: int) -> np.ndarray:
    """Fold ids from a hash of each row's key (turn id): the same in every batch and process."""
    return np.fromiter((zlib.crc32(key.encode()) % folds for key in keys), dtype=np.int64)


@dataclass(frozen=True, eq=False)  # arrays: == would be ambiguous
class CrossFittedRewardModel:
    """Per-arm ridge regressions of reward on context, one set per fold, each fitted on the
    turns of the other folds."""

    weights: np.ndarray  # [folds, arms, d]
    low: float  # the range of the rewards it was fitted on
    high: float

    @classmethod
    def fit(cls, log: LoggedTurns, fold_ids: np.ndarray, *, n_arms: int, folds: int, ridge=1.0):
        if folds < 2:
            raise ValueError(f"cross-fitting needs at least two folds, got {folds}")
        dim = log.contexts.shape[1]
        a = np.zeros((folds, n_arms, dim, dim))
        b = np.zeros((folds, n_arms, dim))
        for fold in range(folds):
            for arm in range(n_arms):
                x = log.contexts[(fold_ids == fold) & (log.actions == arm)]
                a[fold, arm] = x.T @ x
                b[fold, arm] = x.T @ log.rewards[(fold_ids == fold) & (log.actions == arm)]
        # A fold's model sees every fold but its own: the totals minus its own statistics.
        a_out = a.sum(axis=0) - a + ridge * np.eye(dim)
        weights = np.linalg.solve(a_out, (b.sum(axis=0) - b)[..., None])[..., 0]
        return cls(weights, float(log.rewards.min()), float(log.rewards.max()))

    def predict(self, contexts: np.ndarray, fold_ids: np.ndarray) -> np.ndarray:
        """[n, arms] predicted reward of every arm, by the model that did not see the row."""
        predicted = np.einsum("nad,nd->na", self.weights[fold_ids], contexts)
        # A linear model extrapolates past any reward seen; clipping only brings it closer.
        return np.clip(predicted, self.low, self.high)


TERMS = ("weight", "ips", "dm", "dr")  # TermSums relies on this order


def row_terms(log: LoggedTurns, target_probs, predicted_rewards, *, max_weight=None):
    """{term: [n]} per-row terms whose means are the estimates: w = pi(a|x)/p0, IPS w r,
    DM sum_a pi(a|x) q(x,a), DR DM + w (r - q(x,a))."""
    log.check_target(target_probs)
    assert predicted_rewards.shape == target_probs.shape, "one predicted reward per arm and row"
    rows = np.arange(len(log))
    weight = target_probs[rows, log.actions] / log.propensities
    if max_weight is not None:
        weight = np.minimum(weight, max_weight)
    dm = (target_probs * predicted_rewards).sum(axis=1)
    dr = dm + weight * (log.rewards - predicted_rewards[rows, log.actions])
    return {"weight": weight, "ips": weight * log.rewards, "dm": dm, "dr": dr}


@dataclass(frozen=True)
class Estimate:
    value: float | None  # None where undefined (SNIPS when no weight is positive)
    std_error: float | None
    n: int


@dataclass(frozen=True)
class PolicyEstimates:
    ips: Estimate
    snips: Estimate
    dm: Estimate
    dr: Estimate
    ess: float  # effective sample size of the importance weights: (sum w)^2 / sum w^2
    n: int


@dataclass(frozen=True, eq=False)  # arrays: == would be ambiguous
class TermSums:
    """Additive sums of the per-row terms (ordered as TERMS): batches reduce with ``+``."""

    n: int
    sums: np.ndarray  # [terms]
    squares: np.ndarray  # [terms]
    weight_ips: float  # sum of w * (w r): SNIPS's standard error needs it

    @classmethod
    def of(cls, terms: Mapping[str, np.ndarray]) -> TermSums:
        stacked = np.stack([terms[name] for name in TERMS])  # [terms, n]
        weight_ips = float(terms["weight"] @ terms["ips"])
        return cls(stacked.shape[1], stacked.sum(axis=1), (stacked**2).sum(axis=1), weight_ips)

    def __add__(self, other: TermSums) -> TermSums:
        return TermSums(
            self.n + other.n,
            self.sums + other.sums,
            self.squares + other.squares,
            self.weight_ips + other.weight_ips,
        )

    def estimates(self) -> PolicyEstimates:
        n = self.n
        if n == 0:
            raise ValueError("no rows to estimate from")
        mean = self.sums / n
        variance = np.maximum(self.squares - n * mean**2, 0.0) / max(n - 1, 1)
        est = {
            name: Estimate(float(mean[i]), float(np.sqrt(variance[i] / n)), n)
            for i, name in enumerate(TERMS)
        }
        w_sum, w_squares = self.sums[0], self.squares[0]  # TERMS[0] is the weight
        ips_sum, ips_squares = self.sums[1], self.squares[1]
        snips = Estimate(None, None, n)
        if w_sum > 0:
            value = ips_sum / w_sum
            # Delta method: a row's influence on SNIPS is w (r - SNIPS) / mean(w).
            influence = ips_squares - 2 * value * self.weight_ips + value**2 * w_squares
            std_error = math.sqrt(max(influence, 0.0) / n) / (w_sum / n) / math.sqrt(n)
            snips = Estimate(float(value), float(std_error), n)
        ess = float(w_sum**2 / w_squares) if w_squares > 0 else 0.0
        return PolicyEstimates(est["ips"], snips, est["dm"], est["dr"], ess=ess, n=n)


def evaluate_policy(
    log: LoggedTurns, target_probs, *, folds=5, ridge=1.0, max_weight=None, seed=0
) -> PolicyEstimates:
    """Every estimate at once, in memory, the reward model cross-fitted on random folds.

    ``ips``, ``snips`` and ``doubly_robust`` below pick one of them.
    """
    fold_ids = random_folds(len(log), folds, seed)
    n_arms = target_probs.shape[1]
    model = CrossFittedRewardModel.fit(log, fold_ids, n_arms=n_arms, folds=folds, ridge=ridge)
    predicted = model.predict(log.contexts, fold_ids)
    return TermSums.of(row_terms(log, target_probs, predicted, max_weight=max_weight)).estimates()


def ips(log: LoggedTurns, target_probs, **options) -> Estimate:
    return evaluate_policy(log, target_probs, **options).ips


def snips(log: LoggedTurns, target_probs, **options) -> Estimate:
    return evaluate_policy(log, target_probs, **options).snips


def doubly_robust(log: LoggedTurns, target_probs, **options) -> Estimate:
    return evaluate_policy(log, target_probs, **options).dr


ESTIMATORS = ("ips", "snips", "dm", "dr")  # PolicyEstimates' estimates


@dataclass(frozen=True)
class EstimateError:
    """One estimate against the true value."""

    error: float  # estimate - truth
    std_errors: float | None  # |error| / standard error; None when the standard error is 0
    within: bool  # |error| <= `within` standard errors


@dataclass(frozen=True)
class TruthCheck:
    """A policy's estimates against its true value on the logged contexts (what they target)."""

    truth: float
    ips: EstimateError | None  # None where the estimate is undefined (SNIPS)
    snips: EstimateError | None
    dm: EstimateError | None
    dr: EstimateError | None
    dr_ips_std_error_ratio: float | None  # DR's standard error over IPS's

    @classmethod
    def of(cls, estimates: PolicyEstimates, truth: float, within: float = 2.0) -> TruthCheck:
        errors = {}
        for name in ESTIMATORS:
            estimate: Estimate = getattr(estimates, name)
            if estimate.value is None or estimate.std_error is None:
                errors[name] = None
                continue
            error, std_error = estimate.value - truth, estimate.std_error
            errors[name] = EstimateError(
                error,
                abs(error) / std_error if std_error > 0 else None,
                bool(abs(error) <= within * std_error),
            )
        ips_se, dr_se = estimates.ips.std_error, estimates.dr.std_error
        return cls(truth, **errors, dr_ips_std_error_ratio=dr_se / ips_se if ips_se else None)


def summarise_truth_checks(checks: Mapping[str, TruthCheck]) -> dict[str, dict]:
    """Per estimator: mean absolute error and how many estimates lie within; DR/IPS s.e. ratio."""
    estimators: dict[str, dict] = {}
    for name in ESTIMATORS:
        errors = [e for e in (getattr(c, name) for c in checks.values()) if e is not None]
        estimators[name] = {
            "mean_abs_error": float(np.mean([abs(e.error) for e in errors])) if errors else None,
            "within": sum(e.within for e in errors),
            "compared": len(errors),
        }
    ratios = [c.dr_ips_std_error_ratio for c in checks.values() if c.dr_ips_std_error_ratio]
    ratio = {"mean": float(np.mean(ratios)) if ratios else None}
    ratio |= {"min": min(ratios, default=None), "max": max(ratios, default=None)}
    return {"estimators": estimators, "dr_ips_std_error_ratio": ratio}
