"""Off-policy evaluation of teaching-strategy policies on logged turns (a Ray Data job).

    python -m pipelines.personalization.off_policy_eval --export var/export \\
        --policies uniform fixed:quiz greedy lin_ts [--stats var/export/bandit/lin_ts_v1.json] \\
        [--reward-source any|answer|explicit] [--folds 5] [--max-weight W] \\
        [--truth var/sim_uniform_log.truth.json] [--out reports/off_policy.json]

``--export`` is the store's Parquet export (``make export``: a directory with ``turns/`` and
``rewards/``; Ray Data reads the turns, joined with their rewards by turn_id), or the
simulator's log (a JSON Lines file, or a directory of them, one flat row a turn:
EXPORT_SCHEMA). Every row is labelled usable or dropped (counted by reason, never silently
lost); the driver gathers the usable rows, fits the cross-fitted reward model
(models/personalization/off_policy.py) and the policies' statistics, and Ray Data computes every
policy's per-row terms batch by batch, reduced to additive sums. Without ``--stats``, greedy and
lin_ts use statistics fitted on the same log they are evaluated on: an in-sample, optimistic
figure, and the report says so. ``--truth`` (the simulator's ``<log>.truth.json``) adds, per
candidate with a true value on the logged contexts, each estimator's error and whether it lies
within 2 standard errors, each estimator's mean absolute error and DR's s.e. over IPS's.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.common.vocab import STRATEGIES
from models.personalization import off_policy as ope
from models.personalization.bandit import ArmStatistics, ThompsonConfig
from models.personalization.context import CONTEXT_DIM
from pipelines.common import code_version, init_ray, setup_logging
from pipelines.personalization.off_policy_input import (
    EXPORT_SCHEMA,
    export_paths,
    is_store_export,
    read_export,
)
from pipelines.personalization.off_policy_report import load_truth, markdown_table, truth_section
from store.records import ArmStats

log = logging.getLogger("pipelines.personalization.off_policy_eval")

# Which logged rewards count; "any" averages those present.
REWARD_SOURCES = {
    "answer": ("reward_answer",),
    "explicit": ("reward_explicit",),
    "any": ("reward_explicit", "reward_answer"),
}
# A dropped row is counted once, under the first reason that applies, in this order.
DROP_REASONS = (
    "unknown_strategy",
    "no_context",  # chosen by a fallback: the bandit never saw a context
    "partial_context",
    "invalid_propensity",
    "no_reward",
    "invalid_reward",
)


def _drop_reason(row: Mapping[str, Any], reward: float) -> str:
    context = row["context"]
    propensity = row["propensity"]
    if row["strategy"] not in STRATEGIES:
        return "unknown_strategy"
    if context is None or not isinstance(context, list | np.ndarray) or len(context) == 0:
        return "no_context"
    if len(context) != CONTEXT_DIM or not np.isfinite(np.asarray(context, float)).all():
        return "partial_context"
    if propensity is None or not 0 < propensity <= 1:  # NaN fails the comparison too
        return "invalid_propensity"
    if np.isnan(reward):
        return "no_reward"
    return "" if 0 <= reward <= 1 else "invalid_reward"


def label_rows(batch: pd.DataFrame, *, reward_source: str) -> dict[str, np.ndarray]:
    """The export's rows as arrays, each usable (``drop_reason`` "") or labelled with why not.

    Dropped rows keep their place with placeholder values so that every column stays rectangular.
    """
    batch = batch.reindex(columns=EXPORT_SCHEMA.names)  # a column absent everywhere: all null
    present = batch[list(REWARD_SOURCES[reward_source])].astype(float)
    rewards = present.mean(axis=1, skipna=True).to_numpy()  # NaN where none is present
    reasons = [
        _drop_reason(row, reward)
        for row, reward in zip(batch.to_dict("records"), rewards, strict=True)
    ]
    usable = np.array([reason == "" for reason in reasons], dtype=bool)
    strategies = batch["strategy"].tolist()
    contexts = np.zeros((len(batch), CONTEXT_DIM))
    if usable.any():
        contexts[usable] = np.stack([np.asarray(c, float) for c in batch["context"][usable]])
    return {
        "turn_id": batch["turn_id"].astype(str).to_numpy(),
        "policy": batch["policy"].fillna("").astype(str).to_numpy(),
        "action": np.array(
            [STRATEGIES.index(s) if u else -1 for s, u in zip(strategies, usable, strict=True)]
        ),
        "propensity": np.where(usable, batch["propensity"].astype(float), 1.0),
        "reward": np.where(usable, rewards, 0.0),
        "context": contexts,  # [n, CONTEXT_DIM]
        "drop_reason": np.array(reasons, dtype=str),
    }


def usable_turns(columns: Mapping[str, np.ndarray]) -> tuple[ope.LoggedTurns, np.ndarray]:
    """(the usable rows as LoggedTurns, their turn ids)."""
    keep = columns["drop_reason"] == ""
    turns = ope.LoggedTurns(
        columns["context"][keep],
        columns["action"][keep],
        columns["propensity"][keep],
        columns["reward"][keep],
    )
    return turns, columns["turn_id"][keep]


def batch_term_sums(
    batch: Mapping[str, np.ndarray],
    *,
    policies: Mapping[str, ope.TargetPolicy],
    reward_model: ope.CrossFittedRewardModel,
    folds: int,
    max_weight: float | None,
) -> dict[str, np.ndarray]:
    """One row per policy: the batch's additive sums of the per-row estimation terms."""
    if not (batch["drop_reason"] == "").any():
        empty = ope.TermSums(0, np.zeros(len(ope.TERMS)), np.zeros(len(ope.TERMS)), 0.0)
        sums = [empty] * len(policies)
    else:
        turns, turn_ids = usable_turns(batch)
        predicted = reward_model.predict(turns.contexts, ope.folds_from_keys(turn_ids, folds))
        sums = []
        for policy in policies.values():
            probs = policy.action_probabilities(turns.contexts)
            terms = ope.row_terms(turns, probs, predicted, max_weight=max_weight)
            sums.append(ope.TermSums.of(terms))
    return {
        "policy": np.array(list(policies)),
        "n": np.array([s.n for s in sums]),
        "sums": np.stack([s.sums for s in sums]),  # [policies, terms]
        "squares": np.stack([s.squares for s in sums]),
        "weight_ips": np.array([s.weight_ips for s in sums]),
    }


def reduce_term_sums(rows: Sequence[Mapping[str, Any]]) -> dict[str, ope.TermSums]:
    """Per policy, the sum of every batch's ``batch_term_sums`` rows."""
    per_policy: dict[str, ope.TermSums] = {}
    for row in rows:
        sums = ope.TermSums(
            int(row["n"]), np.asarray(row["sums"]), np.asarray(row["squares"]), row["weight_ips"]
        )
        name = str(row["policy"])
        per_policy[name] = per_policy[name] + sums if name in per_policy else sums
    return per_policy


def load_stats(path: Path) -> dict[str, ArmStatistics]:
    """``{arm: {"n", "reward_sum", "a": [d*d], "b": [d]}}``, checked as the store's ArmStats."""
    stats = {}
    for arm, fields in json.loads(path.read_text()).items():
        record = ArmStats(arm=arm, **fields)
        if arm not in STRATEGIES or record.dim != CONTEXT_DIM or len(record.a) != CONTEXT_DIM**2:
            raise ValueError(
                f"{path}: arm {arm!r} (dim {record.dim}, {len(record.a)} entries in a) is not "
                f"a strategy with {CONTEXT_DIM}-dim statistics"
            )
        stats[arm] = ArmStatistics.from_flat(record.a, record.b, record.n, record.reward_sum)
    return stats


def gather(dataset) -> dict[str, np.ndarray]:
    """Every column of a (small) Ray dataset, as arrays on the driver."""
    batches = list(dataset.iter_batches(batch_size=None, batch_format="numpy"))
    if not batches:
        raise ValueError("the export has no rows")
    return {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}


IN_SAMPLE = "fitted on this log (in-sample: greedy and lin_ts estimates are optimistic)"


def build_report(
    args: argparse.Namespace,
    columns: Mapping[str, np.ndarray],
    estimates: Mapping[str, ope.PolicyEstimates],
) -> dict[str, Any]:
    reasons = columns["drop_reason"]
    turns, _ = usable_turns(columns)
    names, counts = np.unique(columns["policy"][reasons == ""], return_counts=True)
    observed = turns.rewards
    std_error = observed.std(ddof=1) / np.sqrt(len(turns)) if len(turns) > 1 else 0.0
    return {
        "export": str(args.export),
        "reward_source": args.reward_source,
        "rows_read": len(reasons),
        "rows_used": len(turns),
        "dropped": {reason: int((reasons == reason).sum()) for reason in DROP_REASONS},
        "logging": {
            "mean_reward": float(observed.mean()),
            "std_error": float(std_error),
            "n": len(turns),
            "policies": dict(zip(names.tolist(), counts.tolist(), strict=True)),
        },
        "stats_source": str(args.stats) if args.stats else IN_SAMPLE,
        "reward_model": {"kind": "per-arm ridge", "folds": args.folds, "ridge": args.ridge},
        "max_weight": args.max_weight,
        "policies": {name: asdict(estimate) for name, estimate in estimates.items()},
        "code_version": code_version(),
    }


def evaluate_export(args: argparse.Namespace) -> dict[str, Any]:
    """Read, label, fit and estimate; Ray only lives inside (shut down if this started it)."""
    import ray

    if not is_store_export(args.export):
        export_paths(args.export)  # fail before Ray starts
    stats = load_stats(args.stats) if args.stats else None  # fail before Ray starts
    truth = load_truth(args.truth) if args.truth else None
    started_ray = not ray.is_initialized()
    init_ray(threads=1)
    try:
        labelled = (
            read_export(args.export)
            .map_batches(
                label_rows, batch_format="pandas", fn_kwargs={"reward_source": args.reward_source}
            )
            .materialize()
        )
        # The reward model needs every row: gather the (small) log on the driver and fit it.
        columns = gather(labelled)
        if not (columns["drop_reason"] == "").any():
            dropped = dict(zip(*np.unique(columns["drop_reason"], return_counts=True), strict=True))
            raise ValueError(f"no usable turns in {args.export}: dropped {dropped}")
        turns, turn_ids = usable_turns(columns)
        fold_ids = ope.folds_from_keys(turn_ids, args.folds)
        reward_model = ope.CrossFittedRewardModel.fit(
            turns, fold_ids, n_arms=len(STRATEGIES), folds=args.folds, ridge=args.ridge
        )
        stats = stats or ope.fit_arm_statistics(turns, STRATEGIES)
        inputs = ope.PolicyInputs(STRATEGIES, stats, ThompsonConfig(), args.samples, args.seed)
        policies = {spec: ope.build_policy(spec, inputs) for spec in args.policies}
        # Per-row terms, batch by batch in Ray tasks, reduced to additive sums on the driver.
        rows = labelled.map_batches(
            batch_term_sums,
            batch_format="numpy",
            batch_size=args.batch_size,
            fn_kwargs={
                "policies": policies,
                "reward_model": reward_model,
                "folds": args.folds,
                "max_weight": args.max_weight,
            },
        ).take_all()
    finally:
        if started_ray:
            ray.shutdown()
    sums = reduce_term_sums(rows)
    estimates = {spec: sums[spec].estimates() for spec in args.policies}
    report = build_report(args, columns, estimates)
    if truth is not None:
        report["truth"] = truth_section(estimates, truth, source=str(args.truth))
    return report


def _policy_spec(spec: str) -> str:
    if spec.partition(":")[0] not in ope.POLICY_BUILDERS:
        raise argparse.ArgumentTypeError(
            f"unknown policy {spec!r}: known are {', '.join(ope.POLICY_BUILDERS)}"
        )
    return spec


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add(
        "--export",
        type=Path,
        required=True,
        help="the store's Parquet export (make export's OUT), or a simulator log (.jsonl)",
    )
    add("--policies", nargs="+", type=_policy_spec, default=["uniform", "greedy", "lin_ts"])
    add("--reward-source", choices=sorted(REWARD_SOURCES), default="any")
    add("--stats", type=Path, default=None, help="arm statistics (default: fitted on the log)")
    add("--folds", type=int, default=5, help="cross-fitting folds of the reward model")
    add("--ridge", type=float, default=1.0, help="the reward model's ridge penalty")
    add("--max-weight", type=float, default=None, help="clip importance weights at this")
    add("--samples", type=int, default=ThompsonConfig().propensity_samples, help="lin_ts draws")
    add("--seed", type=int, default=0, help="lin_ts's Monte-Carlo seed")
    add("--truth", type=Path, default=None, help="the simulator's truth file to check against")
    add("--batch-size", type=int, default=4096)
    add("--out", type=Path, default=Path("reports") / "off_policy.json", help="+ .md beside it")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    setup_logging()
    started = time.perf_counter()
    report = evaluate_export(args)
    report["seconds"] = round(time.perf_counter() - started, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown_table(report)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    log.info("off-policy report -> %s (+ .md)", args.out)
    return report


if __name__ == "__main__":
    main()
