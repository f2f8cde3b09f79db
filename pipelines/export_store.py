"""Export the logged turns and their rewards for offline evaluation.

    python -m pipelines.export_store [--store sqlite:///var/tutor.db] [--out var/export]

Writes ``turns.jsonl`` (one logged turn per line: the context the policy saw, the strategy it
chose, the propensity of that choice, and the turn's rewards by source) and ``bandit_<policy>.json``
for every policy named in the turns (its additive statistics, as the store holds them), the
input of ``python -m pipelines.personalization.off_policy_eval``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from pipelines.common import setup_logging
from store import DEFAULT_STORE_URI, TutorStore, open_store

log = logging.getLogger("pipelines.export_store")


def export(store: TutorStore, out_dir: Path) -> dict[str, Any]:
    """Write the export; returns what it wrote (counts and paths)."""
    rewards: dict[str, dict[str, float]] = defaultdict(dict)
    for reward in store.iter_rewards():
        rewards[reward.turn_id][reward.source] = reward.reward
    out_dir.mkdir(parents=True, exist_ok=True)
    turns_path = out_dir / "turns.jsonl"
    policies: set[str] = set()
    count = rewarded = 0
    with turns_path.open("w") as f:
        for turn in store.iter_turns():
            policy = turn.model_versions.get("personalization", "unavailable")
            policies.add(policy)
            turn_rewards = rewards.get(turn.turn_id, {})
            rewarded += bool(turn_rewards)
            count += 1
            row = {
                "turn_id": turn.turn_id,
                "learner_id": turn.learner_id,
                "ts": turn.ts,
                "policy": policy,
                "strategy": turn.strategy,
                "propensity": turn.propensity,
                "context": turn.context,
                "reward_explicit": turn_rewards.get("explicit"),
                "reward_answer": turn_rewards.get("answer"),
            }
            f.write(json.dumps(row) + "\n")
    stats_paths = {}
    for policy in sorted(policies - {"unavailable"}):
        stats = {
            arm: s.model_dump(exclude={"arm"}) for arm, s in store.bandit_stats(policy).items()
        }
        stats_paths[policy] = out_dir / f"bandit_{policy}.json"
        stats_paths[policy].write_text(json.dumps(stats) + "\n")
    summary = {
        "turns": count,
        "rewarded_turns": rewarded,
        "turns_path": str(turns_path),
        "bandit_stats": {p: str(path) for p, path in stats_paths.items()},
    }
    log.info("exported %d turns (%d with a reward) to %s", count, rewarded, out_dir)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store",
        default=os.environ.get("TUTOR_STORE_URI", DEFAULT_STORE_URI),
        help="store URI (default: $TUTOR_STORE_URI, else the embedded SQLite file)",
    )
    parser.add_argument("--out", type=Path, default=Path("var/export"))
    args = parser.parse_args(argv)
    setup_logging()
    with open_store(args.store) as store:
        print(json.dumps(export(store, args.out), indent=2))


if __name__ == "__main__":
    main()
