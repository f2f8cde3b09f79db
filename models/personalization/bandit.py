"""Linear Thompson sampling over the teaching strategies (disjoint linear models per arm).

The statistics are additive (A = sum x x^T, b = sum r x, n, reward sum), so they can live in a
shared store and be updated by any replica; this module only turns them into decisions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ArmStatistics:
    a: np.ndarray  # [d, d] sum of x x^T
    b: np.ndarray  # [d] sum of reward * x
    n: int = 0
    reward_sum: float = 0.0

    @classmethod
    def empty(cls, dim: int) -> ArmStatistics:
        return cls(a=np.zeros((dim, dim)), b=np.zeros(dim))

    @classmethod
    def from_flat(cls, a: Sequence[float], b: Sequence[float], n: int, reward_sum: float):
        dim = len(b)
        return cls(
            np.asarray(a, dtype=np.float64).reshape(dim, dim), np.asarray(b, float), n, reward_sum
        )


@dataclass(frozen=True)
class Choice:
    arm: str
    propensity: float  # P(this arm | context) under the sampling policy, estimated by Monte Carlo
    expected_rewards: dict[str, float]  # posterior mean reward per arm


@dataclass(frozen=True)
class ThompsonConfig:
    exploration: float = 0.5  # scales the posterior covariance's square root
    prior_precision: float = 1.0  # ridge: A0 = prior_precision * I
    propensity_samples: int = 512


class LinearThompsonSampling:
    def __init__(self, arms: Sequence[str], dim: int, config: ThompsonConfig | None = None):
        assert len(arms) >= 2, "a bandit needs at least two arms"
        self.arms = tuple(arms)
        self.dim = dim
        self.config = config or ThompsonConfig()
        self._posteriors = {arm: self._posterior(ArmStatistics.empty(dim)) for arm in self.arms}

    def _posterior(self, stats: ArmStatistics) -> tuple[np.ndarray, np.ndarray]:
        precision = stats.a + self.config.prior_precision * np.eye(self.dim)
        covariance = np.linalg.inv(precision)
        mean = covariance @ stats.b
        # Cholesky of the covariance, scaled: samples = mean + scale * L z.
        chol = np.linalg.cholesky((covariance + covariance.T) / 2.0)
        return mean, self.config.exploration * chol

    def update_statistics(self, stats: Mapping[str, ArmStatistics]) -> None:
        for arm in self.arms:
            arm_stats = stats.get(arm) or ArmStatistics.empty(self.dim)
            assert arm_stats.b.shape == (self.dim,), f"{arm}: stats have dim {arm_stats.b.shape}"
            self._posteriors[arm] = self._posterior(arm_stats)

    def reward_distributions(self, context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([arms] mean, [arms] standard deviation) of each arm's sampled reward here.

        A draw of an arm's weights is w = mean + L z with z ~ N(0, I_d), so its reward w . x is
        mean . x + z . (L^T x): a normal of standard deviation |L^T x|. Drawing that one number
        is the same draw as drawing the d weights and taking the product, at 1/d of the normals
        (`make bench`: a choice of 6 arms, d = 15, 513 draws, 0.59 -> 0.07 ms).
        """
        means = np.empty(len(self.arms))
        stds = np.empty(len(self.arms))
        for i, arm in enumerate(self.arms):
            mean, scaled_chol = self._posteriors[arm]
            means[i] = mean @ context
            stds[i] = np.linalg.norm(scaled_chol.T @ context)
        return means, stds

    def _sampled_rewards(self, context: np.ndarray, rng: np.random.Generator, k: int) -> np.ndarray:
        """[k, arms] rewards under k posterior draws of every arm's weights."""
        means, stds = self.reward_distributions(context)
        return means + stds * rng.standard_normal((k, len(self.arms)))

    def choose(self, context: np.ndarray, rng: np.random.Generator) -> Choice:
        assert context.shape == (self.dim,), f"context shape {context.shape}, want ({self.dim},)"
        means, stds = self.reward_distributions(context)
        draws = means + stds * rng.standard_normal((1 + self.config.propensity_samples, len(means)))
        winners = draws.argmax(axis=1)
        chosen = int(winners[0])
        # The first draw decides; the rest estimate how often this arm wins under the policy.
        counts = np.bincount(winners[1:], minlength=len(self.arms))
        # Laplace smoothing keeps a logged propensity above zero for inverse weighting.
        propensity = (counts[chosen] + 1) / (len(winners) - 1 + len(self.arms))
        expected = {arm: float(m) for arm, m in zip(self.arms, means, strict=True)}
        return Choice(
            arm=self.arms[chosen], propensity=float(propensity), expected_rewards=expected
        )

    def expected_rewards(self, contexts: np.ndarray) -> np.ndarray:
        """[n, arms] posterior mean reward of every arm for each of n contexts [n, d]."""
        assert contexts.ndim == 2 and contexts.shape[1] == self.dim, f"contexts {contexts.shape}"
        return np.stack([contexts @ self._posteriors[arm][0] for arm in self.arms], axis=1)

    def action_probabilities(
        self, context: np.ndarray, rng: np.random.Generator, samples: int
    ) -> np.ndarray:
        """[arms] how often each arm wins a posterior draw here (Monte Carlo, no smoothing).

        Off-policy evaluation weighs by these; unlike a logged propensity they may be zero.
        """
        assert context.shape == (self.dim,), f"context shape {context.shape}, want ({self.dim},)"
        winners = self._sampled_rewards(context, rng, samples).argmax(axis=1)
        return np.bincount(winners, minlength=len(self.arms)) / samples

    def preferred_arm(self, context: np.ndarray) -> str:
        means = [float(self._posteriors[arm][0] @ context) for arm in self.arms]
        return self.arms[int(np.argmax(means))]
