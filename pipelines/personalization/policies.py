"""The policies the learner simulator compares, behind one small interface.

``choose`` gets the context every policy may see and the true per-strategy rewards that only the
oracle may use; ``learn`` gets the reward of the strategy it chose.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from models.common.vocab import STRATEGIES
from models.personalization.bandit import ArmStatistics, LinearThompsonSampling, ThompsonConfig
from models.personalization.context import CONTEXT_DIM, FEATURE_NAMES


class StrategyPolicy(Protocol):
    def choose(self, context: np.ndarray, true_rewards: np.ndarray) -> tuple[int, float]:
        """(arm index, propensity of that arm under the policy)."""

    def learn(self, context: np.ndarray, arm: int, reward: float, propensity: float) -> None: ...


class UniformPolicy:
    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def choose(self, context, true_rewards):
        return int(self._rng.integers(len(STRATEGIES))), 1.0 / len(STRATEGIES)

    def learn(self, context, arm, reward, propensity):
        pass


class FixedPolicy:
    def __init__(self, arm: str) -> None:
        self._arm = STRATEGIES.index(arm)

    def choose(self, context, true_rewards):
        return self._arm, 1.0

    def learn(self, context, arm, reward, propensity):
        pass


class OraclePolicy:
    """Knows the hidden emotion and the strategy effects: the ceiling no policy can pass."""

    def choose(self, context, true_rewards):
        return int(np.argmax(true_rewards)), 1.0

    def learn(self, context, arm, reward, propensity):
        pass


class ThompsonPolicy:
    """The served policy (models/personalization/bandit.py) with its statistics accumulated as
    the store would.

    The posterior is rebuilt every ``refresh_every`` turns, not after each reward, because a
    serving replica reads statistics that are up to ``stats_max_age_s`` old.
    """

    def __init__(self, seed: int, config: ThompsonConfig, refresh_every: int = 100) -> None:
        self._policy = LinearThompsonSampling(STRATEGIES, CONTEXT_DIM, config)
        self._rng = np.random.default_rng(seed)
        self._a = np.zeros((len(STRATEGIES), CONTEXT_DIM, CONTEXT_DIM))
        self._b = np.zeros((len(STRATEGIES), CONTEXT_DIM))
        self._n = np.zeros(len(STRATEGIES), dtype=int)
        self._refresh_every = refresh_every
        self._since_refresh = 0

    def choose(self, context, true_rewards):
        choice = self._policy.choose(context, self._rng)
        return STRATEGIES.index(choice.arm), choice.propensity

    def learn(self, context, arm, reward, propensity):
        self._a[arm] += np.outer(context, context)
        self._b[arm] += reward * context
        self._n[arm] += 1
        self._since_refresh += 1
        if self._since_refresh >= self._refresh_every:
            self._policy.update_statistics(
                {
                    s: ArmStatistics(self._a[i], self._b[i], int(self._n[i]))
                    for i, s in enumerate(STRATEGIES)
                }
            )
            self._since_refresh = 0


class VowpalWabbitPolicy:
    """Vowpal Wabbit's contextual bandit (``--cb_explore_adf``) on the same features.

    Shared features are the context, each action is its strategy's name, and ``-q SA`` crosses
    them, so VW learns a linear model per strategy, as the Thompson policy does.
    """

    def __init__(self, seed: int, exploration: str = "--squarecb") -> None:
        import vowpalwabbit  # imported here: only this baseline needs the package

        self._vw = vowpalwabbit.Workspace(
            f"--cb_explore_adf {exploration} -q SA --quiet --random_seed {seed}"
        )
        self._rng = np.random.default_rng(seed)

    @staticmethod
    def _example(context: np.ndarray, label: tuple[int, float, float] | None) -> list[str]:
        features = zip(FEATURE_NAMES, context, strict=True)
        shared = " ".join(f"{name}:{value:.5f}" for name, value in features)
        lines = [f"shared |S {shared}"]
        for i, strategy in enumerate(STRATEGIES):
            prefix = ""
            if label is not None and label[0] == i:
                prefix = f"0:{label[1]:.5f}:{label[2]:.5f} "
            lines.append(f"{prefix}|A {strategy}")
        return lines

    def choose(self, context, true_rewards):
        pmf = np.asarray(self._vw.predict(self._example(context, None)), dtype=float)
        pmf = pmf / pmf.sum()
        arm = int(self._rng.choice(len(pmf), p=pmf))
        return arm, float(pmf[arm])

    def learn(self, context, arm, reward, propensity):
        # VW minimises cost, so a right answer costs 0 and a wrong one 1.
        self._vw.learn(self._example(context, (arm, 1.0 - reward, propensity)))


def policy_builders(thompson: ThompsonConfig) -> dict[str, Callable[[int], StrategyPolicy]]:
    """Every policy the comparison runs, by the name its table and plot show."""
    builders: dict[str, Callable[[int], StrategyPolicy]] = {
        "lin_ts": lambda seed: ThompsonPolicy(seed, thompson),
        "uniform": UniformPolicy,
        "oracle": lambda seed: OraclePolicy(),
        "vw_squarecb": lambda seed: VowpalWabbitPolicy(seed, "--squarecb"),
        "vw_epsilon": lambda seed: VowpalWabbitPolicy(seed, "--epsilon 0.05"),
    }
    for strategy in STRATEGIES:
        builders[f"fixed:{strategy}"] = lambda seed, s=strategy: FixedPolicy(s)
    return builders
