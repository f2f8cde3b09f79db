"""Charts the evaluation pipelines write beside their JSON reports (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# GoEmotions' fine-tuned BERT-base macro-F1 over the 28 labels (paper; reproduction 0.503).
BERT_BASE_MACRO_F1 = 0.46


def plot_per_label_f1(per_label_f1: dict[str, float], macro_f1: float, title: str, path: Path):
    """Horizontal bars, best label on top, with our macro-F1 and BERT-base's as lines."""
    ordered = sorted(per_label_f1.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7, 8))
    ax.barh([label for label, _ in ordered], [f1 for _, f1 in ordered], color="#4878a8")
    ax.axvline(macro_f1, color="black", linestyle="-", label=f"macro-F1 {macro_f1:.3f}")
    ax.axvline(
        BERT_BASE_MACRO_F1,
        color="#c0504d",
        linestyle="--",
        label=f"BERT-base macro-F1 {BERT_BASE_MACRO_F1} (paper)",
    )
    ax.set_xlim(0, 1)
    ax.set_xlabel("test F1")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_reliability(panels: dict[str, dict[str, dict[str, Any]]], title: str, path: Path) -> Path:
    """Reliability diagrams: one panel per key of ``panels``, one curve per model in it, each
    curve a ``models.common.calibration.reliability`` result (``ece`` and ``bins``)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), dpi=110,
                             squeeze=False)  # fmt: skip
    for ax, (panel, curves) in zip(axes[0], panels.items(), strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        for label, curve in curves.items():
            xs = [b["mean_p"] for b in curve["bins"]]
            ys = [b["positive_rate"] for b in curve["bins"]]
            ax.plot(xs, ys, marker="o", label=f"{label} (ECE {curve['ece']:.3f})")
        ax.set_title(panel)
        ax.set_xlabel("predicted P(correct)")
        ax.set_ylabel("observed rate correct")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
