"""Simulate one Thompson-sampling configuration and register it as a personalization version.

    python -m pipelines.personalization.register_policy --statistics lin_ts_v1 \
        --exploration 0.25 --prior-precision 1.0 [--turns 20000] [--seed 0] \
        [--difficulty-version latest] [--no-register | --allow-dirty]

The policy meets the same simulated stream as in ``pipelines.personalization.simulate`` (one
Ray task running its ``run_policy`` for ``lin_ts`` with this exploration and prior), so for the
same seed and turns its figures are the report's ``lin_ts`` row when the configuration is the
report's. The version holds ``policy.json`` (``models.personalization.policy_version``); its
metrics are the simulation's figures, its dataset the KT split the simulated learners come from.

The simulation starts from empty statistics; a served version whose ``statistics`` others
already fill starts warm, so these figures compare configurations, not a version's first day.
A version with the same policy as a registered one is refused (it would add nothing).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from models.common.registry import DEFAULT_REGISTRY_ROOT, ArtifactMetadata, ModelRegistry
from models.personalization.bandit import ThompsonConfig
from models.personalization.policy_version import MODEL_NAME, PolicyVersion
from pipelines.common import (
    add_registration_flags,
    committed_code_version,
    init_ray,
    setup_logging,
    shared_data_dir,
)
from pipelines.personalization.simulate import run_policy, summarise
from pipelines.personalization.simulator import SimulatorConfig

log = logging.getLogger("pipelines.personalization.register_policy")

SIMULATED_POLICY = "lin_ts"  # the simulation's name for the served Thompson-sampling policy


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statistics", required=True, help="the store's statistics it uses")
    parser.add_argument("--exploration", type=float, required=True)
    parser.add_argument("--prior-precision", type=float, required=True)
    parser.add_argument("--turns", type=int, default=SimulatorConfig.turns)
    parser.add_argument("--seed", type=int, default=SimulatorConfig.seed)
    parser.add_argument("--difficulty-version", default="latest")
    parser.add_argument("--data", type=Path, default=shared_data_dir() / "kt")
    parser.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_ROOT)
    add_registration_flags(parser)
    return parser.parse_args(argv)


def simulation_metrics(run: dict[str, Any], config: SimulatorConfig) -> dict[str, Any]:
    """The registered figures of one ``run_policy`` result: the report's row, and the stream."""
    row = summarise([run])["policies"][run["policy"]]
    return {
        "mean_reward": row["mean_reward"],
        "mean_expected_reward": row["mean_expected_reward"],
        "last_5k_expected_reward": row["last_5k_expected_reward"],
        # Per turn: the oracle's true P(correct) on the observation this policy met, less
        # that of the strategy it chose (the oracle's regret is 0 by construction).
        "regret_per_turn": row["regret_per_turn"],
        "choices": row["choices"],
        "turns": config.turns,
        "seed": config.seed,
    }


def register_policy(
    registry: ModelRegistry,
    policy: PolicyVersion,
    *,
    dataset: str,
    code_version: str,
    metrics: dict[str, Any],
    config: dict[str, Any],
) -> ArtifactMetadata:
    """A new ``personalization`` version holding ``policy.json``; refuses a policy already held."""
    for version in registry.versions(MODEL_NAME):
        held = PolicyVersion.from_artifact(registry.load(MODEL_NAME, version).path)
        if held == policy:
            raise FileExistsError(f"{MODEL_NAME} {version} already holds {policy.to_dict()}")
    with tempfile.TemporaryDirectory() as tmp:
        policy.save(tmp)
        return registry.register(
            MODEL_NAME,
            tmp,
            dataset=dataset,
            code_version=code_version,
            metrics=metrics,
            config=config,
        )


def simulate(
    policy: PolicyVersion, config: SimulatorConfig, *, difficulty_version: str, data_dir: Path
) -> dict[str, Any]:
    """``run_policy`` for this configuration as one Ray task (a private Ray, or the job's)."""
    import ray

    init_ray(threads=1)
    task = ray.remote(num_cpus=1)(run_policy)
    started = time.perf_counter()
    run = ray.get(
        task.remote(
            SIMULATED_POLICY,
            config,
            policy.thompson_config(),
            difficulty_version=difficulty_version,
            data_dir=data_dir,
        )
    )
    ray.shutdown()
    log.info("simulated %d turns in %.0f s", config.turns, time.perf_counter() - started)
    return run


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    setup_logging()
    policy = PolicyVersion(args.statistics, args.exploration, args.prior_precision)
    # Before simulating: a run is not spent on a version whose code no commit holds.
    code_version = (
        None if args.no_register else committed_code_version(allow_dirty=args.allow_dirty)
    )
    difficulty = ModelRegistry().load("difficulty", args.difficulty_version)
    config = SimulatorConfig(turns=args.turns, seed=args.seed)
    run = simulate(
        policy,
        config,
        difficulty_version=difficulty.metadata.version,
        data_dir=args.data.resolve(),
    )
    metrics = simulation_metrics(run, config)
    result: dict[str, Any] = {"policy": policy.to_dict(), "metrics": metrics}
    print(json.dumps(result, indent=2))
    if args.no_register:
        return result
    meta = register_policy(
        ModelRegistry(args.registry),
        policy,
        # The simulated learners replay the test split of the difficulty model's own fold.
        dataset=f"{difficulty.metadata.dataset} test split, simulated through difficulty "
        f"{difficulty.metadata.version}",
        code_version=code_version,
        metrics=metrics,
        config={
            "simulated_policy": SIMULATED_POLICY,
            "simulator": asdict(config),
            "difficulty_version": difficulty.metadata.version,
            "propensity_samples": ThompsonConfig.propensity_samples,
        },
    )
    log.info("registered %s %s at %s", MODEL_NAME, meta.version, args.registry / MODEL_NAME)
    result["version"] = meta.version
    return result


if __name__ == "__main__":
    main()
