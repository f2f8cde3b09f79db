"""The learner simulator behind the offline comparison of strategy policies."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.common.vocab import LEARNING_STATES, STRATEGIES
from models.personalization.bandit import ThompsonConfig
from pipelines.common import REPO_ROOT, shared_data_dir
from pipelines.personalization.off_policy_eval import EXPORT_SCHEMA
from pipelines.personalization.simulate import markdown_table, run_policy, summarise
from pipelines.personalization.simulator import SimulatorConfig, strategy_effect

KT_DIR = shared_data_dir() / "kt"
needs_data = pytest.mark.skipif(
    not (KT_DIR / "assist2009_pid").is_dir(), reason=f"shared data not found at {KT_DIR}"
)


def _run(name: str, turns: int, **options):
    config = SimulatorConfig(turns=turns, active_learners=16, seed=3)
    return run_policy(
        name, config, ThompsonConfig(), difficulty_version="v2", data_dir=KT_DIR, **options
    )


def test_no_strategy_is_best_everywhere():
    best = {
        max(STRATEGIES, key=lambda s: strategy_effect(s, emotion, mastery, gap))
        for emotion in LEARNING_STATES
        for mastery in (0.2, 0.5, 0.9)
        for gap in (False, True)
    }
    assert len(best) >= 4, best


@needs_data
def test_every_policy_meets_the_same_stream():
    first, again = _run("fixed:hint", 200), _run("fixed:hint", 200)
    np.testing.assert_array_equal(first["rewards"], again["rewards"])  # answers: 0 or 1, exact
    np.testing.assert_allclose(first["expected"], again["expected"], rtol=0, atol=1e-12)
    # Another strategy meets the same first learner in the same state (the stream is the
    # policy's to shape only through the learners' answers).
    other = _run("fixed:quiz", 200)
    assert other["best_possible"][0] == pytest.approx(first["best_possible"][0], rel=0, abs=1e-12)
    assert not np.array_equal(other["expected"], first["expected"])


@needs_data
def test_thompson_sampling_learns_on_simulated_learners():
    runs = [_run(name, 1500) for name in ("lin_ts", "uniform", "oracle")]
    late = {run["policy"]: run["expected"][-500:].mean() for run in runs}
    assert late["uniform"] < late["lin_ts"] < late["oracle"], late
    summary = summarise(runs)
    # The oracle's choice is the best possible one each turn: no regret, up to rounding.
    assert summary["policies"]["oracle"]["regret_per_turn"] == pytest.approx(0.0, abs=1e-12)


@needs_data
def test_vowpal_wabbit_baseline_logs_valid_propensities():
    run = _run("vw_squarecb", 150, keep_log=True)
    assert len(run["log"]) == 150
    assert set(run["log"][0]) >= set(EXPORT_SCHEMA.names)
    assert all(0 < row["propensity"] <= 1 for row in run["log"])
    assert sum(run["choices"].values()) == 150


@pytest.mark.parametrize("seed", ["", "_seed1", "_seed2"])
def test_committed_simulation_reports_agree_with_their_tables(seed):
    """The README quotes these reports: each Markdown table is its JSON's, and every gain follows
    from the mean rewards (within 1e-12). A missing report fails."""
    reports = REPO_ROOT / "reports"
    summary = json.loads((reports / f"personalization_sim{seed}.json").read_text())
    assert (reports / f"personalization_sim{seed}.md").read_text() == markdown_table(summary)
    rows = summary["policies"]
    best_fixed = rows[summary["best_fixed"]]["mean_reward"]
    best_vw = rows[summary["best_vw"]]["mean_reward"]
    for row in rows.values():
        assert sum(row["choices"].values()) == summary["turns"]
        gain = row["mean_reward"] / best_fixed - 1
        assert row["gain_over_best_fixed"] == pytest.approx(gain, rel=0, abs=1e-12)
        gain = row["mean_reward"] / best_vw - 1
        assert row["gain_over_best_vw"] == pytest.approx(gain, rel=0, abs=1e-12)
