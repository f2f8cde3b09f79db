"""The cross-validation harness's report: per-fold runs, mean and std per (dataset, model),
paired AUC gains, the markdown table and the reliability diagrams (one panel per dataset).

ECE is compared like with like: ``test_ece`` is every model's *calibrated* figure (DKT and the
tracer after their temperature fitted on valid, the feature model after its own valid fit, the
stack fitted on valid); ``test_ece_uncalibrated`` is the raw figure where a model has one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.common.calibration import reliability
from pipelines.difficulty.evaluate import binary_metrics
from pipelines.difficulty.fold_predictions import FoldPredictions
from pipelines.plots import plot_reliability

log = logging.getLogger("pipelines.difficulty.cv_report")

REFERENCE = "dkt"  # paired gains are over DKT, as in the published tables
SUMMARY_KEYS = (
    "test_auc",
    "test_acc",
    "test_log_loss",
    "test_per_row_leaky_auc",
    "test_ece",
    "test_ece_uncalibrated",
    "best_epoch",
)


def run_record(
    dataset: str, model: str, fold: int, predictions: FoldPredictions, limit: int | None
) -> dict[str, Any]:
    """The run's metrics, with the test figures recomputed from its predictions where the
    model did not report them, so that every model's figures come from the same code."""
    test = predictions.test
    computed = {f"test_{k}": v for k, v in binary_metrics(test.labels, test.probs).items()}
    calibration = reliability(test.probs, test.labels)
    computed |= {"test_ece": calibration["ece"], "test_reliability": calibration}
    metrics = dict(predictions.metrics)
    reported = metrics.get("test_auc")
    if reported is not None and abs(reported - computed["test_auc"]) > 1e-6:
        log.warning(
            "%s %s fold %d: reported test AUC %.6f, from its predictions %.6f",
            model,
            dataset,
            fold,
            reported,
            computed["test_auc"],
        )
    for key, value in computed.items():
        metrics.setdefault(key, value)
    return {"dataset": dataset, "model": model, "fold": fold, "limit_students": limit, **metrics}


def _mean_std(values: list[Any]) -> dict[str, float]:
    array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std}


def paired_gain(runs: list[dict[str, Any]], against: list[dict[str, Any]]) -> dict | None:
    """Mean and min over shared folds of ``runs``' test AUC minus ``against``'s."""
    theirs = {r["fold"]: r["test_auc"] for r in against}
    paired = [r["test_auc"] - theirs[r["fold"]] for r in runs if r["fold"] in theirs]
    if not paired:
        return None
    return {"mean": float(np.mean(paired)), "min": float(np.min(paired)), "folds": len(paired)}


def summarise(
    runs: list[dict[str, Any]], stacks: Mapping[str, Sequence[str]] | Sequence[str] = ()
) -> dict[str, Any]:
    """Mean and std per (dataset, model); each model's paired AUC gain over DKT; each stack's
    paired gain over its best base (by mean test AUC) and over every other stack.

    ``stacks``: stack name -> its bases (a plain sequence: the bases of the one ``stack``)."""
    if not isinstance(stacks, Mapping):
        stacks = {"stack": list(stacks)}
    summary: dict[str, Any] = {}
    for dataset in sorted({r["dataset"] for r in runs}):
        per_model: dict[str, Any] = {}
        by_model = {
            m: sorted((r for r in runs if r["dataset"] == dataset and r["model"] == m),
                      key=lambda r: r["fold"])
            for m in sorted({r["model"] for r in runs if r["dataset"] == dataset})
        }  # fmt: skip
        for model, model_runs in by_model.items():
            stats: dict[str, Any] = {k: _mean_std([r.get(k) for r in model_runs])
                                     for k in SUMMARY_KEYS}  # fmt: skip
            stats["folds"] = [r["fold"] for r in model_runs]
            if model != REFERENCE and REFERENCE in by_model:
                gain = paired_gain(model_runs, by_model[REFERENCE])
                if gain:
                    stats["auc_gain_over_dkt"] = gain
            per_model[model] = stats
        for stack, stack_bases in stacks.items():
            bases = [b for b in stack_bases if b in per_model]
            if stack not in by_model or not bases:
                continue
            best = max(bases, key=lambda b: per_model[b]["test_auc"]["mean"])
            gain = paired_gain(by_model[stack], by_model[best])
            if gain:
                per_model[stack]["auc_gain_over_best_base"] = {"base": best, **gain}
            others = [o for o in stacks if o != stack and o in by_model]
            over = {o: paired_gain(by_model[stack], by_model[o]) for o in others}
            if any(over.values()):
                per_model[stack]["auc_gain_over_stacks"] = {o: g for o, g in over.items() if g}
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
    title = "Reliability: leak-free test predictions (calibrated on valid),\npooled over folds"
    return plot_reliability(panels, title, path)


def _figure(stats: dict[str, Any], key: str, digits: int = 4) -> str:
    value = stats[key]["mean"]
    return "—" if np.isnan(value) else f"{value:.{digits}f}"


def markdown_table(summary: dict[str, Any]) -> str:
    lines = [
        "| dataset | model | leak-free AUC | ACC | per-row (leaky) AUC | ECE calibrated (raw) "
        "| AUC gain over DKT | stack: gain over its best base |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset, per_model in summary.items():
        for model, s in per_model.items():
            gain = s.get("auc_gain_over_dkt")
            over_base = s.get("auc_gain_over_best_base")
            lines.append(
                f"| {dataset} | {model} (folds {len(s['folds'])}) | "
                f"{s['test_auc']['mean']:.4f} ± {s['test_auc']['std']:.4f} | "
                f"{s['test_acc']['mean']:.4f} ± {s['test_acc']['std']:.4f} | "
                f"{_figure(s, 'test_per_row_leaky_auc')} | {_figure(s, 'test_ece', 3)} "
                f"({_figure(s, 'test_ece_uncalibrated', 3)}) | "
                + (f"{gain['mean']:+.4f} (min {gain['min']:+.4f})" if gain else "")
                + " | "
                + (
                    f"{over_base['base']} {over_base['mean']:+.4f} (min {over_base['min']:+.4f})"
                    if over_base
                    else ""
                )
                + " |"
            )
    return "\n".join(lines)


def write_report(
    out: Path,
    runs: list[dict[str, Any]],
    *,
    model_args: dict[str, Any],
    extra: Sequence[str],
    stack_bases: Mapping[str, Sequence[str]] | Sequence[str],
    complete: bool,
) -> dict[str, Any]:
    """The JSON report (and its markdown table beside it, ``<stem>.md``)."""
    summary = summarise(runs, stack_bases)
    report = {
        "protocol": "leak-free: rows of one problem attempt predicted from the state before it",
        "complete": complete,
        "model_args": model_args,
        "extra_args": list(extra),
        "stack_bases": dict(stack_bases)
        if isinstance(stack_bases, Mapping)
        else {"stack": list(stack_bases)},
        "summary": summary,
        "runs": sorted(runs, key=lambda r: (r["dataset"], r["model"], r["fold"])),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown_table(summary) + "\n")
    return report
