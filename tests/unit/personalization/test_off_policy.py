"""Off-policy evaluation: the estimators against a synthetic log whose answer is known, the input
checks, the check against a truth file, and the Ray job on a tiny export."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest

from models.common.vocab import STRATEGIES
from models.personalization import off_policy as ope
from models.personalization.bandit import ArmStatistics
from models.personalization.context import CONTEXT_DIM
from pipelines.common import REPO_ROOT
from pipelines.export import export as export_store
from pipelines.personalization import off_policy_eval, off_policy_input, off_policy_report
from store.sqlite_store import SQLiteStore
from tests.store.test_contract import make_reward, make_turn

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
    assert estimates.ess == pytest.approx(len(logged), rel=1e-9)


def _assert_same_estimate(one: ope.Estimate, other: ope.Estimate) -> None:
    """The same computation twice: equal to within rounding (relative 1e-12)."""
    assert one.n == other.n
    assert one.value == pytest.approx(other.value, rel=1e-12, abs=1e-15)
    assert one.std_error == pytest.approx(other.std_error, rel=1e-12, abs=1e-15)


def test_single_estimators_agree_with_evaluate_policy(logged, greedy):
    target = greedy.action_probabilities(logged.contexts)
    everything = ope.evaluate_policy(logged, target)
    _assert_same_estimate(ope.ips(logged, target), everything.ips)
    _assert_same_estimate(ope.snips(logged, target), everything.snips)
    _assert_same_estimate(ope.doubly_robust(logged, target), everything.dr)
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
    for name in ("ips", "snips", "dm", "dr"):  # sums in another order: equal to rounding
        _assert_same_estimate(getattr(summed, name), getattr(whole, name))
    assert summed.ess == pytest.approx(whole.ess, rel=1e-12)


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
    # Shares of the same seeded draws: equal, allowing only rounding (1e-12).
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-12)
    np.testing.assert_allclose(together.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_greedy_splits_ties_and_untrained_is_uniform():
    empty = {arm: ArmStatistics.empty(DIM) for arm in ARMS}
    probs = ope.GreedyLinearPolicy(ARMS, empty).action_probabilities(np.ones((3, DIM)))
    np.testing.assert_allclose(probs, 1.0 / len(ARMS))


def test_policies_are_built_by_name():
    inputs = ope.PolicyInputs(ARMS, stats={arm: ArmStatistics.empty(DIM) for arm in ARMS})
    fixed = ope.build_policy("fixed:quiz", inputs).action_probabilities(np.ones((2, DIM)))
    np.testing.assert_allclose(fixed[:, ARMS.index("quiz")], 1.0, rtol=0, atol=1e-12)
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


def logged_rows(n: int = 120, seed: int = 0, prefix: str = "turn") -> list[dict]:
    """A tiny log: usable turns plus one or more of each bad kind, an hour apart (6 UTC days)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        arm = int(rng.integers(len(ARMS)))
        context = [1.0, *rng.uniform(0, 1, CONTEXT_DIM - 1).round(4).tolist()]
        reward = float(rng.binomial(1, 0.3 + 0.1 * arm))
        rows.append(
            {
                "turn_id": f"{prefix}-{i}",
                "learner_id": f"learner-{i % 7}",
                "ts": 1.7e9 + 3600.0 * i,
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
    return rows


def write_export(path, n: int = 120, seed: int = 0) -> None:
    """The log as the simulator writes it: JSON Lines, one flat row a turn."""
    path.write_text("".join(json.dumps(row) + "\n" for row in logged_rows(n, seed)))


def write_store_export(out, rows: list[dict]) -> None:
    """The log as the tutor stores it (turns, and a reward per source), then `make export`ed."""
    with SQLiteStore(out.parent / f"{out.name}.db") as store:
        for row in rows:
            turn = make_turn(
                row["turn_id"],
                learner_id=row["learner_id"],
                ts=row["ts"],
                strategy=row["strategy"],
                propensity=row["propensity"],
                context=row["context"],
                model_versions={"personalization": row["policy"]},
            )
            store.save_turn(turn)
            for source in ("explicit", "answer"):
                if (value := row.get(f"reward_{source}")) is not None:
                    reward = make_reward(
                        row["turn_id"], source, row["learner_id"], policy=row["policy"],
                        strategy=row["strategy"], reward=value, ts=row["ts"] + 60,
                    )  # fmt: skip
                    store.add_reward(reward, context=None)
        export_store(store, out, source="test")


def test_the_store_export_reads_as_the_flat_log(tmp_path):
    """make export's turns joined with their rewards: the same rows the simulator logs."""
    rows = logged_rows()
    write_store_export(tmp_path / "export", rows)
    turns = pads.dataset(tmp_path / "export" / "turns", partitioning="hive").to_table()
    assert len(set(turns.column("day").to_pylist())) == 6  # one partition a day, read together
    rewards = off_policy_input.rewards_by_turn(tmp_path / "export" / "rewards")
    joined = off_policy_input.attach_rewards(turns.to_pandas(), rewards=rewards)
    assert list(joined.columns) == off_policy_input.EXPORT_SCHEMA.names
    expected = pd.DataFrame(rows).reindex(columns=joined.columns)
    joined = joined.sort_values("turn_id", ignore_index=True)
    expected = expected.sort_values("turn_id", ignore_index=True)
    plain = [c for c in joined.columns if c != "context"]
    pd.testing.assert_frame_equal(joined[plain], expected[plain], check_dtype=False)
    assert [list(c) for c in joined["context"]] == expected["context"].tolist()
    columns = off_policy_eval.label_rows(joined, reward_source="any")
    reasons = columns["drop_reason"]
    assert {r: int((reasons == r).sum()) for r in off_policy_eval.DROP_REASONS} == EXPECTED_DROPS


def test_an_export_without_rewards_reads_as_unrewarded(tmp_path):
    (tmp_path / "rewards").mkdir()
    rewards = off_policy_input.rewards_by_turn(tmp_path / "rewards")
    turns = pd.DataFrame(
        {"turn_id": ["t"], "learner_id": ["l"], "ts": [1.0], "version_personalization": [None],
         "strategy": ["quiz"], "propensity": [0.5], "context": [[1.0]]}
    )  # fmt: skip
    joined = off_policy_input.attach_rewards(turns, rewards=rewards)
    assert joined[["reward_explicit", "reward_answer"]].isna().all(axis=None)


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
        # Exact by design: JSON writes a float's shortest repr, which reads back to the same bits.
        np.testing.assert_array_equal(loaded[arm].a, fitted[arm].a)
        assert loaded[arm].n == fitted[arm].n == 10
    layout["quiz"]["b"] = layout["quiz"]["b"][:3]
    path.write_text(json.dumps(layout))
    with pytest.raises(ValueError, match="arm 'quiz'"):
        off_policy_eval.load_stats(path)


# ---- against a truth file ---------------------------------------------------------------------


def _estimates(**values_and_errors: tuple[float | None, float | None]) -> ope.PolicyEstimates:
    e = {name: ope.Estimate(value, se, 1000) for name, (value, se) in values_and_errors.items()}
    return ope.PolicyEstimates(**e, ess=100.0, n=1000)


def test_truth_check_measures_each_estimate_in_standard_errors():
    estimates = _estimates(
        ips=(0.63, 0.01), snips=(None, None), dm=(0.57, 0.002), dr=(0.615, 0.006)
    )
    check = ope.TruthCheck.of(estimates, truth=0.6)
    assert check.truth == 0.6
    assert check.ips.error == pytest.approx(0.03, abs=1e-12)
    assert check.ips.std_errors == pytest.approx(3.0, rel=1e-9) and not check.ips.within
    assert check.snips is None  # undefined estimates are not compared
    assert check.dm.error == pytest.approx(-0.03, abs=1e-12) and not check.dm.within
    assert check.dr.std_errors == pytest.approx(2.5, rel=1e-9) and not check.dr.within
    assert check.dr_ips_std_error_ratio == pytest.approx(0.6, rel=1e-9)
    assert ope.TruthCheck.of(estimates, truth=0.6, within=3.5).ips.within  # a wider band
    assert ope.TruthCheck.of(estimates, truth=0.62).dr.within  # 0.8 se


def test_truth_checks_summarise_per_estimator():
    checks = {
        "a": ope.TruthCheck.of(
            _estimates(ips=(0.63, 0.01), snips=(0.6, 0.01), dm=(0.6, 0.01), dr=(0.592, 0.005)), 0.6
        ),
        "b": ope.TruthCheck.of(
            _estimates(ips=(0.47, 0.02), snips=(None, None), dm=(0.5, 0.01), dr=(0.51, 0.004)), 0.5
        ),
    }
    summary = ope.summarise_truth_checks(checks)
    ips, snips, dr = (summary["estimators"][name] for name in ("ips", "snips", "dr"))
    assert ips["mean_abs_error"] == pytest.approx(0.03, abs=1e-12)  # |+0.03| and |-0.03|
    assert (ips["within"], ips["compared"]) == (1, 2)  # 3 se: outside; 1.5 se: within
    assert (snips["within"], snips["compared"]) == (1, 1)  # b's SNIPS is undefined
    assert dr["mean_abs_error"] == pytest.approx(0.009, abs=1e-12)  # (0.008 + 0.01) / 2
    assert (dr["within"], dr["compared"]) == (1, 2)  # 1.6 se: within; 2.5 se: outside
    ratio = summary["dr_ips_std_error_ratio"]  # 0.005 / 0.01 and 0.004 / 0.02
    assert ratio == pytest.approx({"mean": 0.35, "min": 0.2, "max": 0.5}, rel=1e-9)


def test_truth_file_is_checked(tmp_path):
    path = tmp_path / "log.truth.json"
    path.write_text(json.dumps({"on_logged_contexts": {"fixed:quiz": 0.6, "oracle": 1}}))
    assert off_policy_report.load_truth(path) == {
        "on_logged_contexts": {"fixed:quiz": 0.6, "oracle": 1.0},
        "on_policy": {},
    }
    for bad in ({"on_policy": {"uniform": 0.5}}, {"on_logged_contexts": {"uniform": "high"}}):
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="on_logged_contexts"):
            off_policy_report.load_truth(path)


def write_truth(path) -> dict[str, dict[str, float]]:
    """The truth of write_export's world: arm i is right with P = 0.3 + 0.1 i, whatever the
    context; "oracle" is a truth of no candidate, "on_policy" only for one."""
    truth = {
        "on_logged_contexts": {f"fixed:{arm}": 0.3 + 0.1 * i for i, arm in enumerate(ARMS)}
        | {"oracle": 0.8},
        "on_policy": {"fixed:quiz": 0.65},
    }
    path.write_text(json.dumps(truth))
    return truth


def test_the_report_compares_candidates_with_their_truth(tmp_path):
    """The job's steps without Ray (label, fit, per-batch sums), then the report with --truth."""
    export, truth_file = tmp_path / "turns.jsonl", tmp_path / "turns.truth.json"
    write_export(export, n=600)
    truth = write_truth(truth_file)
    args = off_policy_eval.parse_args(
        ["--export", str(export), "--truth", str(truth_file), "--folds", "3",
         "--policies", "uniform", "fixed:quiz", "fixed:review", "fixed:hint"]
    )  # fmt: skip
    columns = off_policy_eval.label_rows(pd.read_json(export, lines=True), reward_source="any")
    turns, turn_ids = off_policy_eval.usable_turns(columns)
    folds = ope.folds_from_keys(turn_ids, args.folds)
    model = ope.CrossFittedRewardModel.fit(turns, folds, n_arms=len(ARMS), folds=args.folds)
    inputs = ope.PolicyInputs(ARMS, ope.fit_arm_statistics(turns, ARMS))
    policies = {spec: ope.build_policy(spec, inputs) for spec in args.policies}
    sums = off_policy_eval.batch_term_sums(
        columns, policies=policies, reward_model=model, folds=args.folds, max_weight=None
    )
    per_policy = off_policy_eval.reduce_term_sums(
        [{key: value[i] for key, value in sums.items()} for i in range(len(policies))]
    )
    estimates = {spec: per_policy[spec].estimates() for spec in args.policies}
    report = off_policy_eval.build_report(args, columns, estimates)
    loaded = off_policy_report.load_truth(args.truth)
    report["truth"] = off_policy_report.truth_section(estimates, loaded, source=str(args.truth))
    compared = report["truth"]
    json.dumps(report)  # the JSON report holds it as is

    assert list(compared["policies"]) == ["fixed:quiz", "fixed:review", "fixed:hint"]  # uniform:
    assert compared["reference"] == {  # no truth; the other truths are kept as reference
        name: pytest.approx(value, abs=1e-12)
        for name, value in truth["on_logged_contexts"].items()
        if name not in args.policies
    }
    for name, row in compared["policies"].items():
        assert row["truth"] == pytest.approx(truth["on_logged_contexts"][name], abs=1e-12)
        assert row["truth_on_policy"] == truth["on_policy"].get(name)
        for estimator in ope.ESTIMATORS:
            estimate, error = report["policies"][name][estimator], row[estimator]
            assert error["error"] == pytest.approx(estimate["value"] - row["truth"], abs=1e-12)
            assert error["within"] == (abs(error["error"]) <= 2 * estimate["std_error"])
        ips_se, dr_se = (report["policies"][name][e]["std_error"] for e in ("ips", "dr"))
        assert row["dr_ips_std_error_ratio"] == pytest.approx(dr_se / ips_se, rel=1e-9)
        # A fixed arm's IPS and DR from ~100 of its turns (seeded): within 3 standard errors.
        assert row["ips"]["std_errors"] < 3 and row["dr"]["std_errors"] < 3, (name, row)
    for estimator in ope.ESTIMATORS:
        errors = [abs(row[estimator]["error"]) for row in compared["policies"].values()]
        summary = compared["estimators"][estimator]
        assert summary["mean_abs_error"] == pytest.approx(np.mean(errors), abs=1e-12)
        assert summary["compared"] == 3
    # DR's control variate: a smaller standard error than IPS's on the same turns.
    assert compared["dr_ips_std_error_ratio"]["max"] < 1

    table = off_policy_report.markdown_table(report)
    quiz = compared["policies"]["fixed:quiz"]
    assert f"| fixed:quiz | {quiz['truth']:.4f} | 0.6500 | {quiz['ips']['error']:+.4f} (" in table
    assert f"| fixed:review | {compared['policies']['fixed:review']['truth']:.4f} |  | " in table
    mae = compared["estimators"]["dr"]["mean_abs_error"]
    assert f"DR {mae:.4f}." in table and "Within 2 standard errors: IPS " in table
    assert (
        "Truths of no candidate here: fixed:socratic 0.3000" in table and "oracle 0.8000" in table
    )
    without = {key: value for key, value in report.items() if key != "truth"}
    assert "truth" not in off_policy_report.markdown_table(without)  # no --truth, no comparison


def test_the_committed_simulator_check_is_its_own_table():
    """reports/off_policy_sim.{json,md}, which the README quotes: the Markdown is the JSON's table
    (with the truth comparison whenever the JSON holds one). A missing report fails."""
    report = json.loads((REPO_ROOT / "reports" / "off_policy_sim.json").read_text())
    table = (REPO_ROOT / "reports" / "off_policy_sim.md").read_text()
    assert table == off_policy_report.markdown_table(report)
    assert report["rows_used"] == report["logging"]["n"] <= report["rows_read"]


@pytest.mark.integration
def test_the_job_end_to_end_on_a_tiny_export(tmp_path):
    export = tmp_path / "export"
    # Two logs in one store export (make export's Parquet, partitioned by day), read together.
    write_store_export(export, logged_rows(prefix="a") + logged_rows(seed=1, prefix="b"))
    out = tmp_path / "report.json"
    write_truth(tmp_path / "export.truth.json")
    # Its own process, as `python -m` or `ray job submit` runs it: Ray Data keeps handles to
    # helper actors in module globals, and in a process that already ran (and shut down) a
    # Ray Train job those handles point at the dead cluster and the job hangs.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"  # a token left in ~/.ray must not matter
    job = subprocess.run(
        [sys.executable, "-m", "pipelines.personalization.off_policy_eval", "--export", str(export),
         "--policies", "uniform", "fixed:quiz", "greedy", "lin_ts",
         "--samples", "64", "--folds", "3", "--out", str(out),
         "--truth", str(tmp_path / "export.truth.json")],
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
    assert uniform["ips"]["value"] == pytest.approx(report["logging"]["mean_reward"], rel=1e-9)
    assert uniform["ess"] == pytest.approx(report["rows_used"], rel=1e-9)
    for estimates in report["policies"].values():
        for name in ("ips", "snips", "dm", "dr"):
            assert np.isfinite(estimates[name]["value"]) and estimates[name]["std_error"] >= 0
    table = out.with_suffix(".md").read_text()
    assert "| fixed:quiz |" in table and "no_context 4" in table
    assert list(report["truth"]["policies"]) == ["fixed:quiz"]  # the one candidate with a truth
    assert "Mean absolute error: IPS " in table
