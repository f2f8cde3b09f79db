"""Evaluate an emotion version's learning-state decisions on labelled learner messages.

    python -m pipelines.emotion.evaluate_learning_states [--version latest]
        [--set tests/data/learner_messages_test.jsonl] [--out reports/learner_states_<v>.json]

The default ``--out`` for a set other than the test set is
``reports/learner_states_<v>_<set stem>.json``, so a dev run never overwrites the test report.

Each line of the set is ``{"text": ..., "state": ...}``. The version's classifier picks the
state as it does in service: with its state head when the artifact has one
(``models.emotion.state_head``), else with the fixed rule ``states_from_scores(scores, thresholds)``
of ``models.emotion.learning_states``. Prints and writes the state accuracy, macro-F1 over the 8
states, per-state recall, the confusion matrix (also drawn as a PNG beside the JSON,
``<out stem>_confusion.png``), the errors, and for comparison the accuracy of the fixed rule and
of the legacy share-out (raw scores, no thresholds) on the same scores. The test set is held
out: train on ``tests/data/learner_messages_train.jsonl``, tune on ``..._dev.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from models.common.registry import DEFAULT_REGISTRY_ROOT, ModelRegistry
from models.common.vocab import LEARNING_STATES
from models.emotion.classifier import EmotionClassifier
from models.emotion.learning_states import (
    STATE_GAINS,
    calibrate_states,
    states_from_scores,
    top_state_ece,
)
from models.emotion.state_head import FEATURES
from pipelines.common import REPO_ROOT, setup_logging, use_offline_models

logger = logging.getLogger("evaluate_learner_states")
MODEL_NAME = "emotion"
DEFAULT_SET = REPO_ROOT / "tests" / "data" / "learner_messages_test.jsonl"
RULE = "calibrated: scores / thresholds, shared out by STATE_WEIGHTS, times STATE_GAINS"
STATE_HEAD_RULE = f"state head (models/emotion/state_head.py): logistic regression over {FEATURES}"


def read_set(path: Path | str) -> tuple[list[str], list[str]]:
    """The texts and their gold states; an unknown state is an error."""
    texts, states = [], []
    with Path(path).open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if row["state"] not in LEARNING_STATES:
                raise ValueError(f"{path}:{n}: unknown state {row['state']!r}")
            texts.append(row["text"])
            states.append(row["state"])
    return texts, states


def _display_path(path: Path | str) -> str:
    """The path relative to the repository when it lies inside it, so reports are portable."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(REPO_ROOT))
    except ValueError:
        return str(resolved)


def _per_state(values: np.ndarray) -> dict[str, float]:
    return {s: round(float(v), 4) for s, v in zip(LEARNING_STATES, values, strict=True)}


def state_metrics(gold: list[str], predicted: list[str]) -> dict:
    """Accuracy, macro-F1 over the 8 states, per-state recall/precision/F1, confusion matrix."""
    index = {s: i for i, s in enumerate(LEARNING_STATES)}
    k = len(LEARNING_STATES)
    confusion = np.zeros((k, k), dtype=np.int64)  # row = gold, column = predicted
    for g, p in zip(gold, predicted, strict=True):
        confusion[index[g], index[p]] += 1
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted_n = confusion.sum(axis=0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    precision = np.divide(tp, predicted_n, out=np.zeros(k), where=predicted_n > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    return {
        "n": len(gold),
        "accuracy": float(tp.sum() / max(1, len(gold))),
        "macro_f1": float(f1.mean()),
        "per_state_recall": _per_state(recall),
        "per_state_precision": _per_state(precision),
        "per_state_f1": _per_state(f1),
        "per_state_support": {s: int(v) for s, v in zip(LEARNING_STATES, support, strict=True)},
        "confusion": confusion.tolist(),
    }


def evaluate(
    version: str = "latest",
    set_path: Path | str = DEFAULT_SET,
    *,
    registry: Path | str = DEFAULT_REGISTRY_ROOT,
    classifier: EmotionClassifier | None = None,
) -> dict:
    """Score the set with the version's classifier and measure the state decisions."""
    artifact = ModelRegistry(registry).load(MODEL_NAME, version)
    clf = classifier or EmotionClassifier.from_artifact(artifact.path)
    texts, gold = read_set(set_path)
    scores, states = clf.predict_states(texts)
    predicted = [LEARNING_STATES[i] for i in states.argmax(axis=1)]

    def accuracy_of(rule_states: np.ndarray) -> dict:
        decided = [LEARNING_STATES[i] for i in rule_states.argmax(axis=1)]
        metrics = state_metrics(gold, decided)
        return {k: metrics[k] for k in ("accuracy", "macro_f1", "per_state_recall")}

    gold_index = np.array([LEARNING_STATES.index(g) for g in gold])
    served = calibrate_states(states, clf.state_temperature)  # what the API's confidence is
    report = {
        "model": MODEL_NAME,
        "version": artifact.metadata.version,
        "set": _display_path(set_path),
        "rule": STATE_HEAD_RULE if clf.state_head is not None else RULE,
        "state_gains": dict(STATE_GAINS),
        **state_metrics(gold, predicted),
        "labels": list(LEARNING_STATES),
        "confidence_calibration": {
            "state_temperature": clf.state_temperature,
            "ece_before": round(top_state_ece(states, gold_index), 4),
            "ece_after": round(top_state_ece(served, gold_index), 4),
            "method": "top state's probability, 10 equal-width bins",
        },
        # The same label scores through the fixed rules, for comparison.
        "fixed_rule": accuracy_of(states_from_scores(scores, clf.thresholds)),
        "legacy_share_out": accuracy_of(states_from_scores(scores)),
        "errors": [
            {"text": t, "gold": g, "predicted": p, "confidence": round(float(row.max()), 4)}
            for t, g, p, row in zip(texts, gold, predicted, served, strict=True)
            if g != p
        ],
    }
    return report


def plot_confusion(report: dict, path: Path | str) -> Path:
    """Draw the confusion matrix (counts; rows = gold, columns = predicted) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(report["confusion"])
    labels = report["labels"]
    fig, ax = plt.subplots(figsize=(7.5, 6.5), dpi=120)
    ax.imshow(confusion, cmap="Blues", vmin=0)
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted state")
    ax.set_ylabel("gold state")
    ax.set_title(
        f"{report['model']} {report['version']} on {Path(report['set']).name}\n"
        f"accuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f} (n={report['n']})",
        fontsize=10,
    )
    high = confusion.max() / 2 if confusion.size else 0
    for i in range(confusion.shape[0]):
        for j in range(confusion.shape[1]):
            if confusion[i, j]:
                color = "white" if confusion[i, j] > high else "black"
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", color=color)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def default_out(version: str, set_path: Path | str) -> Path:
    """``reports/learner_states_<version>.json`` for the test set; other sets add their stem."""
    suffix = "" if Path(set_path).resolve() == DEFAULT_SET.resolve() else f"_{Path(set_path).stem}"
    return REPO_ROOT / "reports" / f"learner_states_{version}{suffix}.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--version", default="latest", help="emotion version (default: latest)")
    p.add_argument("--set", type=Path, default=DEFAULT_SET, help="labelled JSONL messages")
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_ROOT)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default reports/learner_states_<version>.json (other sets: _<set stem> added)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging()
    use_offline_models(args.threads)
    version = ModelRegistry(args.registry).resolve_version(MODEL_NAME, args.version)
    report = evaluate(version, args.set, registry=args.registry)
    out = args.out or default_out(version, args.set)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    png = plot_confusion(report, out.with_name(f"{out.stem}_confusion.png"))
    fixed, legacy = report["fixed_rule"], report["legacy_share_out"]
    logger.info(
        "%s %s on %s: accuracy %.4f, macro-F1 %.4f (%s); fixed rule %.4f / %.4f; "
        "legacy share-out %.4f / %.4f",
        MODEL_NAME,
        version,
        args.set,
        report["accuracy"],
        report["macro_f1"],
        report["rule"],
        fixed["accuracy"],
        fixed["macro_f1"],
        legacy["accuracy"],
        legacy["macro_f1"],
    )
    for state in LEARNING_STATES:
        logger.info("  recall %-13s %.3f", state, report["per_state_recall"][state])
    logger.info("wrote %s and %s", out, png)
    return report


if __name__ == "__main__":
    main()
