"""The at-risk evaluation's Markdown summary and plot, from its JSON report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.difficulty.at_risk_eval import CURVE_FRACTIONS, ROC_POINTS
from pipelines.plots import plt

ARMS = {"model": "risk model (logistic)", "baseline": "1 - accuracy of last 10"}


def markdown(report: dict[str, Any]) -> str:
    protocol = report["protocol"]
    lines = [
        "# Learners at risk: held-out KT students",
        "",
        f"Label: {protocol['label']}. Points: {protocol['points']}.",
        f"Command: `{report['command']}` ({report['seconds']:.0f} s, "
        f"code {report['code_version']}).",
        "",
        "| dataset | students | points | at risk | AUC model | AUC baseline "
        "| AUC diff (folds won, p) | P@10% model | P@10% baseline | P@10% diff (folds won, p) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in report["datasets"].items():
        mean, paired = result["mean"], result["paired_model_vs_baseline"]
        cells = [name, result["students"], result["points"], f"{result['positive_rate']:.3f}"]
        for metric in ("auc", "precision_at_10"):
            test = paired[metric]
            cells += [
                f"{mean['model'][metric]:.3f}",
                f"{mean['baseline'][metric]:.3f}",
                f"{test['mean_difference']:+.3f} ± {test['sd_difference']:.3f} "
                f"({test['folds_model_better']}/{test['folds']}, p={test['p_value']:.2g})",
            ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    references = {n: r["mean"]["reference_gbm"] for n, r in report["datasets"].items()
                  if "reference_gbm" in r["mean"]}  # fmt: skip
    if references:
        lines += [
            "",
            "Reference, not served (no per-feature reasons): gradient boosting on the same "
            "features, mean over folds: "
            + "; ".join(
                f"{n} AUC {m['auc']:.3f}, P@10% {m['precision_at_10']:.3f}"
                for n, m in references.items()
            )
            + ".",
        ]
    lines += ["", "Means over the 5 folds; diff = model - baseline, mean ± sd over folds, "
              "paired t-test p.", ""]  # fmt: skip
    served = report.get("served_model")
    if served:
        lines += [
            f"Served model ({served['version']}): trained on {served['dataset']}; coefficients "
            "(standardised features, + = more risk):",
            "",
            "| feature | coefficient |",
            "|---|---|",
            *(f"| {f} | {c:+.3f} |" for f, c in served["coefficients"].items()),
            "",
        ]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> Path:
    """Per dataset: precision at the top k% (pooled folds) and ROC, model vs baseline."""
    datasets = report["datasets"]
    fig, axes = plt.subplots(2, len(datasets), figsize=(4.4 * len(datasets), 8), squeeze=False)
    grid = [i / (ROC_POINTS - 1) for i in range(ROC_POINTS)]
    for column, (name, result) in enumerate(datasets.items()):
        top, roc = axes[0][column], axes[1][column]
        for arm, label in ARMS.items():
            curves = result["curves"][arm]
            auc = result["mean"][arm]["auc"]
            top.plot([100 * f for f in CURVE_FRACTIONS], curves["precision_at"], label=label)
            roc.plot(grid, curves["roc_tpr"], label=f"{label} (AUC {auc:.3f}, fold mean)")
        top.axvline(10, color="grey", linestyle=":", linewidth=1)
        top.axhline(result["positive_rate"], color="grey", linestyle="--", linewidth=1,
                    label=f"base rate {result['positive_rate']:.3f}")  # fmt: skip
        top.set_title(f"{name}: precision among the riskiest k%")
        top.set_xlabel("k (% of held-out points, pooled over folds)")
        top.set_ylabel("share at risk")
        top.set_ylim(0, 1)
        top.legend(fontsize=8)
        roc.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        roc.set_title(f"{name}: ROC (pooled folds)")
        roc.set_xlabel("false positive rate")
        roc.set_ylabel("true positive rate")
        roc.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"At risk = {report['protocol']['label']}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
