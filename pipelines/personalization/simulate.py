"""Compare teaching-strategy policies on simulated learners, as a Ray job (one task per policy).

    python -m pipelines.personalization.simulate [--turns 20000] [--policies lin_ts uniform ...]
        [--difficulty-version v2] [--out reports/personalization_sim.json]
        [--log-policy uniform --log-out var/sim_uniform_log.jsonl]

Every policy meets the same simulated stream (pipelines/personalization/simulator.py). The report
gives each policy's mean reward (right answers per turn) and its mean *expected* reward (the true
P(correct) of the strategy it chose, less noisy), the gain over the best fixed strategy and
over Vowpal Wabbit, cumulative-reward curves as a PNG, and a Markdown table beside the JSON.

``--log-policy`` writes that policy's turns in the store export's format, with the true value of
every fixed strategy, so off-policy estimates can be checked against the truth
(``python -m pipelines.personalization.off_policy_eval``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.common.registry import ModelRegistry
from models.common.vocab import STRATEGIES
from models.personalization.bandit import ThompsonConfig
from pipelines.common import code_version, init_ray, setup_logging, shared_data_dir
from pipelines.personalization.policies import policy_builders
from pipelines.personalization.simulator import LearnerSimulator, SimulatorConfig

log = logging.getLogger("pipelines.personalization.simulate")

DEFAULT_OUT = Path("reports/personalization_sim.json")


def load_simulator(config: SimulatorConfig, difficulty_version: str, data_dir: Path):
    import torch

    from models.difficulty.data import load_split
    from models.difficulty.loader import load_tracer

    torch.set_num_threads(1)
    artifact = ModelRegistry().load("difficulty", difficulty_version)
    tracer = load_tracer(artifact.path)
    fold = int(artifact.metadata.config.get("fold", 1))
    dataset = artifact.metadata.config.get("dataset", "assist2009_pid")
    learners = load_split(data_dir, dataset, "test", fold)
    return LearnerSimulator(tracer, learners, config)


def run_policy(
    name: str,
    config: SimulatorConfig,
    thompson: ThompsonConfig,
    *,
    difficulty_version: str,
    data_dir: Path,
    keep_log: bool = False,
) -> dict[str, Any]:
    """One policy over the whole stream: rewards per turn, and the logged turns if asked."""
    simulator = load_simulator(config, difficulty_version, data_dir)
    policy = policy_builders(thompson)[name](config.seed + 1)
    rewards = np.zeros(config.turns)
    expected = np.zeros(config.turns)
    best_possible = np.zeros(config.turns)
    chosen = np.zeros(len(STRATEGIES), dtype=int)
    logged: list[dict[str, Any]] = []
    started = time.perf_counter()
    for t in range(config.turns):
        observation = simulator.observe()
        arm, propensity = policy.choose(observation.context, observation.true_rewards)
        reward = simulator.respond(observation, arm)
        policy.learn(observation.context, arm, reward, propensity)
        rewards[t], expected[t] = reward, observation.true_rewards[arm]
        best_possible[t] = observation.true_rewards.max()
        chosen[arm] += 1
        if keep_log:
            logged.append(
                {
                    "turn_id": f"sim-{t}",
                    "learner_id": "simulated",
                    "ts": float(t),
                    "policy": name,
                    "strategy": STRATEGIES[arm],
                    "propensity": propensity,
                    "context": observation.context.round(6).tolist(),
                    "reward_explicit": None,
                    "reward_answer": reward,
                    "true_rewards": observation.true_rewards.round(6).tolist(),
                }
            )
    log.info("%s: %d turns in %.0f s", name, config.turns, time.perf_counter() - started)
    return {
        "policy": name,
        "rewards": rewards,
        "expected": expected,
        "best_possible": best_possible,
        "choices": dict(zip(STRATEGIES, chosen.tolist(), strict=True)),
        "log": logged,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rows = {
        run["policy"]: {
            "mean_reward": float(run["rewards"].mean()),
            "mean_expected_reward": float(run["expected"].mean()),
            "last_5k_expected_reward": float(run["expected"][-5000:].mean()),
            "regret_per_turn": float((run["best_possible"] - run["expected"]).mean()),
            "choices": run["choices"],
        }
        for run in runs
    }
    fixed = {name: row for name, row in rows.items() if name.startswith("fixed:")}
    best_fixed = max(fixed, key=lambda n: fixed[n]["mean_reward"]) if fixed else None
    vw = [n for n in rows if n.startswith("vw_")]
    best_vw = max(vw, key=lambda n: rows[n]["mean_reward"]) if vw else None
    for row in rows.values():
        if best_fixed:
            row["gain_over_best_fixed"] = row["mean_reward"] / rows[best_fixed]["mean_reward"] - 1
        if best_vw:
            row["gain_over_best_vw"] = row["mean_reward"] / rows[best_vw]["mean_reward"] - 1
    return {"policies": rows, "best_fixed": best_fixed, "best_vw": best_vw}


def markdown_table(summary: dict[str, Any]) -> str:
    lines = [
        "| policy | mean reward | mean expected reward | last 5k expected | regret/turn "
        "| vs best fixed | vs best VW |",
        "|---|---|---|---|---|---|---|",
    ]
    ordered = sorted(summary["policies"].items(), key=lambda kv: -kv[1]["mean_reward"])
    for name, row in ordered:
        gains = [
            f"{row[key]:+.1%}" if key in row else ""
            for key in ("gain_over_best_fixed", "gain_over_best_vw")
        ]
        lines.append(
            f"| {name} | {row['mean_reward']:.4f} | {row['mean_expected_reward']:.4f} "
            f"| {row['last_5k_expected_reward']:.4f} | {row['regret_per_turn']:.4f} "
            f"| {gains[0]} | {gains[1]} |"
        )
    return "\n".join(lines) + "\n"


def plot_cumulative(runs: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> None:
    """Cumulative reward (left) and, where the lines crowd, a 1000-turn moving mean (right)."""
    from pipelines.plots import plt

    fig, (total, recent) = plt.subplots(1, 2, figsize=(13, 5))
    shown = {"lin_ts", "uniform", "oracle", summary["best_fixed"], summary["best_vw"]}
    window = 1000
    for run in runs:
        if run["policy"] not in shown:
            continue
        turns = np.arange(1, len(run["rewards"]) + 1)
        total.plot(turns, np.cumsum(run["rewards"]), label=run["policy"])
        moving = np.convolve(run["rewards"], np.ones(window) / window, mode="valid")
        recent.plot(turns[window - 1 :], moving, label=run["policy"])
    total.set_xlabel("turn")
    total.set_ylabel("cumulative reward (right answers)")
    recent.set_xlabel("turn")
    recent.set_ylabel(f"mean reward over the last {window} turns")
    total.legend()
    fig.suptitle("Teaching-strategy policies on simulated learners (same stream)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=SimulatorConfig.turns)
    parser.add_argument("--seed", type=int, default=SimulatorConfig.seed)
    parser.add_argument("--policies", nargs="+", default=list(policy_builders(ThompsonConfig())))
    parser.add_argument("--difficulty-version", default="latest")
    parser.add_argument("--data", type=Path, default=shared_data_dir() / "kt")
    parser.add_argument("--exploration", type=float, default=ThompsonConfig.exploration)
    parser.add_argument("--prior-precision", type=float, default=ThompsonConfig.prior_precision)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--log-policy", help="write this policy's turns for off-policy checks")
    parser.add_argument("--log-out", type=Path, default=Path("var/sim_log.jsonl"))
    parser.add_argument("--parallel", type=int, default=2, help="policies simulated at once")
    args = parser.parse_args(argv)
    setup_logging()
    unknown = set(args.policies) - set(policy_builders(ThompsonConfig()))
    if unknown:
        parser.error(f"unknown policies {sorted(unknown)}")

    import ray

    config = SimulatorConfig(turns=args.turns, seed=args.seed)
    # The version itself, not "latest": the report must still name the model it simulated
    # through after a newer difficulty version is registered.
    args.difficulty_version = ModelRegistry().resolve_version("difficulty", args.difficulty_version)
    thompson = ThompsonConfig(exploration=args.exploration, prior_precision=args.prior_precision)
    init_ray(threads=max(1, args.parallel - 1))
    task = ray.remote(num_cpus=1)(run_policy)
    futures = [
        task.remote(
            name,
            config,
            thompson,
            difficulty_version=args.difficulty_version,
            data_dir=args.data.resolve(),
            keep_log=name == args.log_policy,
        )
        for name in args.policies
    ]
    runs = ray.get(futures)
    ray.shutdown()

    summary = summarise(runs)
    summary.update(
        turns=args.turns,
        seed=args.seed,
        thompson={"exploration": args.exploration, "prior_precision": args.prior_precision},
        difficulty_version=args.difficulty_version,
        code_version=code_version(),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown_table(summary)
    args.out.with_suffix(".md").write_text(table)
    plot_cumulative(runs, summary, args.out.with_suffix(".png"))
    print(table)
    for run in runs:
        if run["log"]:
            write_log(run["log"], summary, args.log_out)


def write_log(rows: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> None:
    """The logged policy's turns, and beside them what off-policy estimates should find.

    Two truths: ``on_logged_contexts``, a fixed strategy's mean true reward on exactly the
    logged contexts (what IPS and DR estimate), and ``on_policy``, each policy's mean expected
    reward when it runs itself, where its choices also change the learners it meets later
    (which no one-step estimate sees).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    true_rewards = np.array([row["true_rewards"] for row in rows])
    truth = {
        "on_logged_contexts": {
            f"fixed:{s}": float(true_rewards[:, i].mean()) for i, s in enumerate(STRATEGIES)
        }
        | {"oracle": float(true_rewards.max(axis=1).mean())},
        "on_policy": {n: r["mean_expected_reward"] for n, r in summary["policies"].items()},
    }
    path.with_suffix(".truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    log.info("logged %d turns to %s", len(rows), path)


if __name__ == "__main__":
    main()
