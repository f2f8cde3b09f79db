"""Off-policy evaluation: the estimators against a synthetic log whose answer is known, the input
checks, and the Ray job on a tiny export."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from models.common.vocab import STRATEGIES
from models.personalization import off_policy as ope
from models.personalization.bandit import ArmStatistics
from models.personalization.context import CONTEXT_DIM
from pipelines.common import REPO_ROOT
from pipelines.personalization import off_policy_eval

ARMS = STRATEGIES
DIM = 5  # bias + 4 features in [0, 1]


class SyntheticWorld:
    """Expected reward linear in the context per arm, Bernoulli rewards, and a softmax logging
    policy whose propensities are exact."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        # Intercepts 0.3..0.5 and slopes -0.07..0.1 keep every expected reward inside (0, 1).
        slopes = rng.uniform(-0.07, 0.1, (len(ARMS), DIM - 1))
        self.theta = np.column_stack([rng.uniform(0.3, 0.5, len(ARMS)), slopes])  # [arms, d]
        self.logging_scores = rng.normal(0.0, 0.5, (len(ARMS), DIM))

    @staticmethod
    def contexts(n: int, rng: np.random.Generator) -> np.ndarray:
        return np.column_stack([np.ones(n), rng.uniform(0, 1, (n, DIM - 1))])

    def expected_rewards(self, contexts: np.ndarray) -> np.ndarray:
        return contexts @ self.theta.T  # [n, arms]

    def action_probabilities(self, contexts: np.ndarray) -> np.ndarray:
        """The logging policy's: a softmax of linear scores (so it is a TargetPolicy too)."""
        scores = contexts @ self.logging_scores.T
        weights = np.exp(scores - scores.max(axis=1, keepdims=True))
        return weights / weights.sum(axis=1, keepdims=True)

    def log(self, n: int, rng: np.random.Generator, policy=None) -> ope.LoggedTurns:
        x = self.contexts(n, rng)
        probs = (policy or self).action_probabilities(x)
        actions = (probs.cumsum(axis=1) > rng.uniform(size=(n, 1))).argmax(axis=1)
        rows = np.arange(n)
        rewards = rng.binomial(1, self.expected_rewards(x)[rows, actions]).astype(float)
        return ope.LoggedTurns(x, actions, probs[rows, actions], rewards)

    def true_value(self, policy, rng: np.random.Generator, n: int = 200_000) -> float:
        """By simulation: the policy's expected reward over fresh contexts (no reward noise)."""
        x = self.contexts(n, rng)
        return float((policy.action_probabilities(x) * self.expected_rewards(x)).sum(axis=1).mean())


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(seed=0)


@pytest.fixture(scope="module")
def logged(world) -> ope.LoggedTurns:
    return world.log(5000, np.random.default_rng(1))


@pytest.fixture(scope="module")
def greedy(world) -> ope.GreedyLinearPolicy:
    """Greedy on statistics from an independent, uniformly logged sample."""
    uniform = ope.UniformPolicy(ARMS)
    training = world.log(5000, np.random.default_rng(2), policy=uniform)
    return ope.GreedyLinearPolicy(ARMS, ope.fit_arm_statistics(training, ARMS))


def _assert_recovers(estimates: ope.PolicyEstimates, truth: float) -> None:
    for name in ("ips", "dr"):
        estimate = getattr(estimates, name)
        assert abs(estimate.value - truth) < 3 * estimate.std_error, (name, estimate, truth)
    # The reward model as a control variate: the same log, a tighter estimate.
    assert estimates.dr.std_error < 0.8 * estimates.ips.std_error


def test_ips_and_dr_recover_a_fixed_arms_value(world, logged):
    arm = ARMS.index("quiz")
    truth = float(world.theta[arm] @ np.r_[1.0, np.full(DIM - 1, 0.5)])  # E[x]: bias, U(0, 1)
    target = ope.FixedPolicy(ARMS, "quiz").action_probabilities(logged.contexts)
    _assert_recovers(ope.evaluate_policy(logged, target), truth)


def test_ips_and_dr_recover_a_greedy_policys_value(world, logged, greedy):
    truth = world.true_value(greedy, np.random.default_rng(3))
    estimates = ope.evaluate_policy(logged, greedy.action_probabilities(logged.contexts))
    _assert_recovers(estimates, truth)
    assert estimates.ess < len(logged)  # greedy differs from the logging policy


def test_the_logging_policy_as_target_gives_the_observed_mean(world, logged):
    estimates = ope.evaluate_policy(logged, world.action_probabilities(logged.contexts))
    assert estimates.ips.value == pytest.approx(logged.rewards.mean(), rel=1e-12)
    assert estimates.snips.value == pytest.approx(logged.rewards.mean(), rel=1e-12)
    assert estimates.ess == pytest.approx(len(logged))


def test_single_estimators_agree_with_evaluate_policy(logged, greedy):
    target = greedy.action_probabilities(logged.contexts)
    everything = ope.evaluate_policy(logged, target)
    assert ope.ips(logged, target) == everything.ips
    assert ope.snips(logged, target) == everything.snips
    assert ope.doubly_robust(logged, target) == everything.dr
    clipped = ope.ips(logged, target, max_weight=2.0)
    assert clipped.value < everything.ips.value  # greedy's weights reach 1/p0 > 2


def test_batched_sums_give_the_same_estimates(logged, greedy):
    """What the Ray job does: the reward model on all rows, then terms per batch, summed."""
    target = greedy.action_probabilities(logged.contexts)
    folds = ope.random_folds(len(logged), 5)
    model = ope.CrossFittedRewardModel.fit(logged, folds, n_arms=len(ARMS), folds=5)
    predicted = model.predict(logged.contexts, folds)
    whole = ope.TermSums.of(ope.row_terms(logged, target, predicted)).estimates()
    summed = ope.TermSums(0, np.zeros(len(ope.TERMS)), np.zeros(len(ope.TERMS)), 0.0)
    for rows in (slice(0, 1000), slice(1000, 3500), slice(3500, None)):
        batch = ope.LoggedTurns(
            logged.contexts[rows],
            logged.actions[rows],
            logged.propensities[rows],
            logged.rewards[rows],
        )
        summed = summed + ope.TermSums.of(ope.row_terms(batch, target[rows], predicted[rows]))
    summed = summed.estimates()
    for name in ("ips", "snips", "dm", "dr"):
        assert getattr(summed, name).value == pytest.approx(getattr(whole, name).value)
        assert getattr(summed, name).std_error == pytest.approx(getattr(whole, name).std_error)
    assert summed.ess == pytest.approx(whole.ess)


def test_a_rows_reward_prediction_never_saw_its_reward(logged):
    folds = ope.random_folds(len(logged), 5)
    before = ope.CrossFittedRewardModel.fit(logged, folds, n_arms=len(ARMS), folds=5)
    flipped = logged.rewards.copy()
    flipped[0] = 1.0 - flipped[0]
    changed = ope.LoggedTurns(logged.contexts, logged.actions, logged.propensities, flipped)
    after = ope.CrossFittedRewardModel.fit(changed, folds, n_arms=len(ARMS), folds=5)
    x, own = logged.contexts[:1], folds[:1]
    # Equal up to rounding (the other folds' statistics are totals minus the row's own fold).
    np.testing.assert_allclose(before.predict(x, own), after.predict(x, own), rtol=1e-12)
    other = (own + 1) % 5
    assert np.abs(before.predict(x, other) - after.predict(x, other)).max() > 1e-6


def test_thompson_probabilities_do_not_depend_on_batching(greedy, logged):
    stats = ope.fit_arm_statistics(logged, ARMS)
    policy = ope.ThompsonPolicy(ARMS, stats, samples=256, seed=7)
    x = logged.contexts[:20]
    together = policy.action_probabilities(x)
    alone = np.vstack([policy.action_probabilities(x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_allclose(together.sum(axis=1), 1.0)


def test_greedy_splits_ties_and_untrained_is_uniform():
    empty = {arm: ArmStatistics.empty(DIM) for arm in ARMS}
    probs = ope.GreedyLinearPolicy(ARMS, empty).action_probabilities(np.ones((3, DIM)))
    np.testing.assert_allclose(probs, 1.0 / len(ARMS))


def test_policies_are_built_by_name():
    inputs = ope.PolicyInputs(ARMS, stats={arm: ArmStatistics.empty(DIM) for arm in ARMS})
    fixed = ope.build_policy("fixed:quiz", inputs).action_probabilities(np.ones((2, DIM)))
    assert fixed[:, ARMS.index("quiz")].tolist() == [1.0, 1.0]
    for spec in ("uniform", "greedy", "lin_ts"):
        probs = ope.build_policy(spec, inputs).action_probabilities(np.ones((2, DIM)))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="unknown policy 'oracle'"):
        ope.build_policy("oracle", inputs)
    with pytest.raises(ValueError, match="fixed:<arm>"):
        ope.build_policy("fixed", inputs)
    with pytest.raises(ValueError, match="needs per-arm statistics"):
        ope.build_policy("greedy", ope.PolicyInputs(ARMS))


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.2, float("nan")])
def test_propensities_outside_zero_one_are_refused(bad):
    with pytest.raises(ValueError, match=r"propensities must be in \(0, 1\]: row 1 has"):
        ope.LoggedTurns(np.ones((3, DIM)), [0, 1, 2], [0.5, bad, 0.5], [1.0, 0.0, 1.0])


def test_mismatched_shapes_are_refused(logged):
    with pytest.raises(ValueError, match="rewards has shape"):
        ope.LoggedTurns(np.ones((3, DIM)), [0, 1, 2], [0.5, 0.5, 0.5], [1.0, 0.0])
    with pytest.raises(ValueError, match="target probabilities"):
        ope.evaluate_policy(logged, np.full((10, len(ARMS)), 1.0 / len(ARMS)))
    with pytest.raises(ValueError, match="sum to 1"):
        ope.evaluate_policy(logged, np.full((len(logged), len(ARMS)), 0.5))


# ---- the job ---------------------------------------------------------------------------------

EXPECTED_DROPS = {
    "unknown_strategy": 1,
    "no_context": 2,
    "partial_context": 1,
    "invalid_propensity": 1,
    "no_reward": 2,
    "invalid_reward": 1,
}


def write_export(path, n: int = 120, seed: int = 0) -> None:
    """A tiny export as the store writes it: usable turns plus one or more of each bad kind."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        arm = int(rng.integers(len(ARMS)))
        context = [1.0, *rng.uniform(0, 1, CONTEXT_DIM - 1).round(4).tolist()]
        reward = float(rng.binomial(1, 0.3 + 0.1 * arm))
        rows.append(
            {
                "turn_id": f"turn-{i}",
                "learner_id": f"learner-{i % 7}",
                "ts": 1.7e9 + i,
                "policy": "lin_ts",
                "strategy": ARMS[arm],
                "propensity": 1.0 / len(ARMS),
                "context": context,
                "reward_explicit": reward if i % 2 else None,
                "reward_answer": None if i % 2 else reward,
            }
        )
    rows[0]["strategy"] = "lecture"
    rows[1]["context"] = rows[2]["context"] = []  # fallback turns
    rows[3]["context"] = rows[3]["context"][:4]
    rows[4]["propensity"] = 0.0
    rows[5]["reward_explicit"] = rows[5]["reward_answer"] = None
    del rows[6]["reward_answer"]  # a key left out reads as null
    rows[6]["reward_explicit"] = None
    rows[7]["reward_explicit"] = 1.5
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_label_rows_counts_every_dropped_row_by_reason(tmp_path):
    export = tmp_path / "turns.jsonl"
    write_export(export)
    columns = off_policy_eval.label_rows(pd.read_json(export, lines=True), reward_source="any")
    reasons = columns["drop_reason"]
    assert {r: int((reasons == r).sum()) for r in off_policy_eval.DROP_REASONS} == EXPECTED_DROPS
    turns, turn_ids = off_policy_eval.usable_turns(columns)
    assert len(turns) == len(turn_ids) == 120 - sum(EXPECTED_DROPS.values())
    assert turns.contexts.shape == (len(turns), CONTEXT_DIM)
    # Only explicit rewards: the odd rows' answers no longer count.
    explicit = off_policy_eval.label_rows(
        pd.read_json(export, lines=True), reward_source="explicit"
    )
    assert (explicit["drop_reason"] == "no_reward").sum() > 50


def test_stats_file_loads_in_the_stores_layout(tmp_path):
    rng = np.random.default_rng(4)
    x = np.column_stack([np.ones(60), rng.uniform(0, 1, (60, CONTEXT_DIM - 1))])
    turns = ope.LoggedTurns(x, np.arange(60) % len(ARMS), np.full(60, 1 / 6), rng.uniform(size=60))
    fitted = ope.fit_arm_statistics(turns, ARMS)
    layout = {
        arm: {
            "n": st.n,
            "reward_sum": st.reward_sum,
            "a": st.a.ravel().tolist(),
            "b": st.b.tolist(),
        }
        for arm, st in fitted.items()
    }
    path = tmp_path / "arm_stats.json"
    path.write_text(json.dumps(layout))
    loaded = off_policy_eval.load_stats(path)
    for arm in ARMS:
        np.testing.assert_array_equal(loaded[arm].a, fitted[arm].a)
        assert loaded[arm].n == fitted[arm].n == 10
    layout["quiz"]["b"] = layout["quiz"]["b"][:3]
    path.write_text(json.dumps(layout))
    with pytest.raises(ValueError, match="arm 'quiz'"):
        off_policy_eval.load_stats(path)


@pytest.mark.integration
def test_the_job_end_to_end_on_a_tiny_export(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    write_export(export / "part-0.jsonl")
    write_export(export / "part-1.jsonl", seed=1)  # a directory of exports, read together
    out = tmp_path / "report.json"
    # Its own process, as `python -m` or `ray job submit` runs it: Ray Data keeps handles to
    # helper actors in module globals, and in a process that already ran (and shut down) a
    # Ray Train job those handles point at the dead cluster and the job hangs.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"  # a token left in ~/.ray must not matter
    job = subprocess.run(
        [sys.executable, "-m", "pipelines.personalization.off_policy_eval", "--export", str(export),
         "--policies", "uniform", "fixed:quiz", "greedy", "lin_ts",
         "--samples", "64", "--folds", "3", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
    )  # fmt: skip
    assert job.returncode == 0, job.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["rows_read"] == 240
    assert report["dropped"] == {reason: 2 * count for reason, count in EXPECTED_DROPS.items()}
    assert report["rows_used"] == report["logging"]["n"] == 240 - 2 * sum(EXPECTED_DROPS.values())
    assert "in-sample" in report["stats_source"]
    uniform = report["policies"]["uniform"]
    # The log is uniform: the uniform candidate's weights are all 1.
    assert uniform["ips"]["value"] == pytest.approx(report["logging"]["mean_reward"])
    assert uniform["ess"] == pytest.approx(report["rows_used"])
    for estimates in report["policies"].values():
        for name in ("ips", "snips", "dm", "dr"):
            assert np.isfinite(estimates[name]["value"]) and estimates[name]["std_error"] >= 0
    table = out.with_suffix(".md").read_text()
    assert "| fixed:quiz |" in table and "no_context 4" in table
