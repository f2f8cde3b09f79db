import numpy as np
import pytest

from models.personalization.bandit import ArmStatistics, LinearThompsonSampling, ThompsonConfig
from models.personalization.context import (
    CONTEXT_DIM,
    FEATURE_NAMES,
    build_context,
    learner_pace,
)

ARMS = ("a", "b", "c")


def _stats_favouring(best: str, dim: int, n: int = 200) -> dict[str, ArmStatistics]:
    """Statistics as if each arm was pulled n times with x = e0 and reward 1 for `best` only."""
    x = np.zeros(dim)
    x[0] = 1.0
    stats = {}
    for arm in ARMS:
        reward = 1.0 if arm == best else 0.0
        stats[arm] = ArmStatistics(
            a=n * np.outer(x, x), b=n * reward * x, n=n, reward_sum=n * reward
        )
    return stats


def test_policy_prefers_the_rewarded_arm_after_learning():
    policy = LinearThompsonSampling(ARMS, dim=4, config=ThompsonConfig(exploration=0.5))
    policy.update_statistics(_stats_favouring("b", 4))
    context = np.array([1.0, 0.0, 0.0, 0.0])
    rng = np.random.default_rng(0)
    choices = [policy.choose(context, rng).arm for _ in range(200)]
    assert choices.count("b") > 190
    assert policy.preferred_arm(context) == "b"


def test_untrained_policy_explores_every_arm_with_propensities_that_match():
    policy = LinearThompsonSampling(ARMS, dim=4, config=ThompsonConfig(propensity_samples=2000))
    context = np.array([1.0, 0.5, 0.0, 0.2])
    rng = np.random.default_rng(1)
    choices = [policy.choose(context, rng) for _ in range(600)]
    freq = {arm: sum(c.arm == arm for c in choices) / len(choices) for arm in ARMS}
    for choice in choices[:20]:
        assert 0 < choice.propensity <= 1
        # The logged propensity estimates how often the policy picks that arm here.
        assert choice.propensity == pytest.approx(freq[choice.arm], abs=0.08)


def test_context_is_bounded_and_named():
    context = build_context(
        states={"confused": 0.7, "neutral": 0.3},
        recommended_p_correct=0.8,
        candidate_p_correct=[0.8, 0.4],
        # only the last RECENT_WINDOW (10) answers count: the four wrong ones fall out
        answers=[False] * 4 + [True] * 6 + [False, True, True, True],
        session_turns=40,
        seconds_since_last_turn=1e7,
    )
    assert context.shape == (CONTEXT_DIM,) == (len(FEATURE_NAMES),)
    named = dict(zip(FEATURE_NAMES, context, strict=True))
    assert named["state_confused"] == 0.7
    assert named["streak"] == pytest.approx(3 / 5)
    assert named["mastery_mean"] == pytest.approx(0.6)
    assert named["recent_accuracy"] == 0.9
    assert named["session_turns"] == 1.0
    assert np.all(np.abs(context) <= 1.0)


def test_cold_context_uses_neutral_priors():
    context = build_context(
        states={},
        recommended_p_correct=None,
        candidate_p_correct=[],
        answers=[],
        session_turns=0,
        seconds_since_last_turn=None,
    )
    named = dict(zip(FEATURE_NAMES, context, strict=True))
    assert named["p_correct_next"] == named["mastery_mean"] == named["recent_accuracy"] == 0.5
    assert named["streak"] == named["minutes_since_last_turn"] == 0.0


def test_pace_is_the_median_pause_within_sessions():
    # Two sessions split by a day; the day is not part of the learner's pace.
    times = [0.0, 30.0, 90.0, 100.0, 86_500.0, 86_560.0]
    assert learner_pace(times) == (pytest.approx(45.0), 2)  # median of 30, 60, 10, 60
    assert learner_pace([5.0]) == (None, 1)
    assert learner_pace([]) == (None, 0)


def test_a_sampled_reward_is_the_reward_of_sampled_weights():
    """Each arm's draw is one normal, mean . x and exploration * sqrt(x^T A^-1 x): the reward of
    weights drawn from the posterior N(mean, exploration^2 A^-1), without drawing the weights."""
    config = ThompsonConfig(exploration=0.7, prior_precision=2.0)
    policy = LinearThompsonSampling(ARMS, dim=4, config=config)
    stats = _stats_favouring("c", 4, n=30)
    policy.update_statistics(stats)
    context = np.array([1.0, 0.3, -0.2, 0.5])
    means, stds = policy.reward_distributions(context)
    for i, arm in enumerate(ARMS):
        covariance = np.linalg.inv(stats[arm].a + config.prior_precision * np.eye(4))
        mean = covariance @ stats[arm].b
        assert means[i] == pytest.approx(mean @ context, rel=1e-9)
        assert stds[i] == pytest.approx(0.7 * np.sqrt(context @ covariance @ context), rel=1e-9)
    draws = policy._sampled_rewards(context, np.random.default_rng(3), 20000)
    assert draws.mean(axis=0) == pytest.approx(means, abs=4 * stds.max() / np.sqrt(20000))
    assert draws.std(axis=0) == pytest.approx(stds, rel=0.03)
