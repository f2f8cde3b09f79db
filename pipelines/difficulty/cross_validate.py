"""The knowledge-tracing harness: every model, every fold, every dataset, one protocol.

    python -m pipelines.difficulty.cross_validate [--datasets assist2009_pid assist2015 statics]
        [--models dkt akt] [--folds 1 2 3 4 5] [--parallel N] [--out reports/difficulty_cv.json]

Each (dataset, model, fold) is ``pipelines.difficulty.training.fit_and_test``: train on
``train_k``, pick the epoch on ``valid_k``, measure ``test_k`` leak-free (and per-row, labelled
as leaky), nothing registered. Runs are Ray tasks, so on a cluster they spread over its nodes
(``ray job submit -- python -m pipelines.difficulty.cross_validate``); ``--parallel`` caps how
many run at once here. Writes per-fold figures, mean and standard deviation per (dataset, model),
the paired AUC difference of each model against DKT on the same folds, and a reliability
diagram per dataset (``<out stem>_reliability.png``, test predictions pooled over folds).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.common import REPO_ROOT, setup_logging
from pipelines.difficulty.evaluate import DEFAULT_DATA_DIR
from pipelines.plots import plot_reliability

log = logging.getLogger("pipelines.difficulty.cross_validate")
DATASETS = ("assist2009_pid", "assist2015", "statics")
# Settings per architecture (chosen on assist2009_pid fold 1's valid split).
MODEL_ARGS: dict[str, list[str]] = {
    "dkt": ["--model", "dkt", "--dropout", "0.4"],
    "akt": ["--model", "akt", "--dropout", "0.2", "--item-bias"],
    # The same with AKT's own four choices (models/difficulty/akt.py's options).
    "akt-full": [
        "--model", "akt", "--dropout", "0.2", "--item-bias", "--decay", "context",
        "--output-reads", "embedding", "--output-layers", "2", "--shared-query-key",
    ],
}  # fmt: skip
SUMMARY_KEYS = (
    "test_auc",
    "test_acc",
    "test_per_row_leaky_auc",
    "test_ece",
    "test_ece_uncalibrated",
    "best_epoch",
)


def run_fold(dataset: str, model: str, fold: int, extra: Sequence[str]) -> dict[str, Any]:
    """One (dataset, model, fold): its test metrics (the model itself is not kept)."""
    from pipelines.difficulty.train import parse_args
    from pipelines.difficulty.training import fit_and_test

    setup_logging()
    args = parse_args(
        [*MODEL_ARGS[model], "--dataset", dataset, "--fold", str(fold), "--no-register", *extra]
    )
    metrics = fit_and_test(args).metrics
    return {"dataset": dataset, "model": model, "fold": fold, **metrics}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std per (dataset, model), and each model's paired AUC gain over DKT."""
    summary: dict[str, Any] = {}
    for dataset in sorted({r["dataset"] for r in runs}):
        per_model: dict[str, Any] = {}
        by_model = {
            m: sorted((r for r in runs if r["dataset"] == dataset and r["model"] == m),
                      key=lambda r: r["fold"])
            for m in sorted({r["model"] for r in runs if r["dataset"] == dataset})
        }  # fmt: skip
        for model, model_runs in by_model.items():
            stats = {}
            for key in SUMMARY_KEYS:
                values = np.array(
                    [np.nan if r.get(key) is None else r[key] for r in model_runs],
                    dtype=np.float64,
                )
                stats[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1))
                              if len(values) > 1 else 0.0}  # fmt: skip
            stats["folds"] = [r["fold"] for r in model_runs]
            per_model[model] = stats
        if "dkt" in by_model:
            dkt = {r["fold"]: r["test_auc"] for r in by_model["dkt"]}
            for model, model_runs in by_model.items():
                paired = [r["test_auc"] - dkt[r["fold"]] for r in model_runs if r["fold"] in dkt]
                if model != "dkt" and paired:
                    per_model[model]["auc_gain_over_dkt"] = {
                        "mean": float(np.mean(paired)),
                        "min": float(np.min(paired)),
                        "folds": len(paired),
                    }
        summary[dataset] = per_model
    return summary


def pooled_reliability(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs' reliability bins pooled (count-weighted) and their mean ECE."""
    bins: dict[float, list[float]] = {}
    for r in runs:
        for b in r["test_reliability"]["bins"]:
            acc = bins.setdefault(b["low"], [0.0, 0.0, 0.0])
            acc[0] += b["mean_p"] * b["count"]
            acc[1] += b["positive_rate"] * b["count"]
            acc[2] += b["count"]
    return {
        "ece": float(np.mean([r["test_ece"] for r in runs])),
        "bins": [
            {"mean_p": p / n, "positive_rate": y / n, "count": n}
            for _, (p, y, n) in sorted(bins.items())
        ],
    }


def plot_cv_reliability(runs: list[dict[str, Any]], path: Path) -> Path:
    """One panel per dataset: mean predicted P(correct) vs observed rate, per model."""
    panels = {
        dataset: {
            model: pooled_reliability(
                [r for r in runs if r["dataset"] == dataset and r["model"] == model]
            )
            for model in sorted({r["model"] for r in runs if r["dataset"] == dataset})
        }
        for dataset in sorted({r["dataset"] for r in runs})
    }
    title = "Reliability: leak-free test predictions,\npooled over folds"
    return plot_reliability(panels, title, path)


def markdown_table(summary: dict[str, Any]) -> str:
    lines = [
        "| dataset | model | leak-free AUC | ACC | per-row (leaky) AUC | ECE | AUC gain over DKT |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset, per_model in summary.items():
        for model, s in per_model.items():
            gain = s.get("auc_gain_over_dkt")
            lines.append(
                f"| {dataset} | {model} (folds {len(s['folds'])}) | "
                f"{s['test_auc']['mean']:.4f} ± {s['test_auc']['std']:.4f} | "
                f"{s['test_acc']['mean']:.4f} ± {s['test_acc']['std']:.4f} | "
                f"{s['test_per_row_leaky_auc']['mean']:.4f} | {s['test_ece']['mean']:.4f} | "
                + (f"{gain['mean']:+.4f} (min {gain['min']:+.4f})" if gain else "")
                + " |"
            )
    return "\n".join(lines)


def write_report(
    out: Path, runs: list[dict[str, Any]], models: Sequence[str], extra: Sequence[str], *,
    complete: bool,
) -> dict[str, Any]:  # fmt: skip
    report = {
        "protocol": "leak-free: rows of one problem attempt predicted from the state before it",
        "complete": complete,
        "model_args": {m: MODEL_ARGS[m] for m in models},
        "extra_args": list(extra),
        "summary": summarise(runs),
        "runs": sorted(runs, key=lambda r: (r["dataset"], r["model"], r["fold"])),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--models", nargs="+", default=["dkt", "akt"], choices=list(MODEL_ARGS))
    parser.add_argument("--folds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--parallel", type=int, default=1, help="runs at once (Ray tasks)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPUs) per run")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "difficulty_cv.json")
    parser.add_argument(
        "extra", nargs="*", help="after --: more pipelines.difficulty.train arguments"
    )
    args = parser.parse_args(argv)
    setup_logging()
    import ray

    extra = ["--data", str(args.data), "--threads", str(args.threads), *args.extra]
    ray.init(num_cpus=args.parallel * args.threads, ignore_reinit_error=True)
    remote_fold = ray.remote(num_cpus=args.threads)(run_fold)
    pending = [
        remote_fold.remote(dataset, model, fold, extra)
        for dataset in args.datasets
        for fold in args.folds
        for model in args.models
    ]
    runs = []
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        run = ray.get(done[0])
        log.info(
            "%s %s fold %d: leak-free AUC %.4f ACC %.4f (%d left)",
            run["dataset"], run["model"], run["fold"], run["test_auc"], run["test_acc"],
            len(pending),
        )  # fmt: skip
        runs.append(run)
        # Rewritten after every run: a long harness stopped early keeps what it measured.
        report = write_report(args.out, runs, args.models, extra, complete=not pending)
    summary = report["summary"]
    png = plot_cv_reliability(runs, args.out.with_name(f"{args.out.stem}_reliability.png"))
    print(markdown_table(summary))
    print(f"report: {args.out}\nreliability diagram: {png}")
    return report


if __name__ == "__main__":
    main()
