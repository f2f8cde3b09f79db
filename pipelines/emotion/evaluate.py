"""Evaluate a registered emotion version end to end (texts -> model -> temperature -> thresholds).

Works for both artifact formats: v1 (frozen encoder + head) and v2 (LoRA adapter merged into the
encoder + head + temperature). Reports macro-F1 (28 labels), Ekman macro-F1, micro-F1,
per-label F1 and the expected calibration error before (temperature 1) and after calibration.

    python -m pipelines.emotion.evaluate --data ../shared/data/goemotions [--version v1]
        [--split test] [--limit N] [--out reports/emotion_v1.json] [--backend torch|onnx|both]

Prints the metrics and writes a JSON report. On the full test split it also evaluates the
eight learning states on the learner test set (``pipelines.emotion.evaluate_learning_states``:
accuracy, confidence ECE, ``reports/learner_states_<v>.json`` and its confusion-matrix PNG), so this
one command reproduces every figure of the README's emotion section. ``--limit N`` evaluates the
first N rows of the split (file order). On the full test split, and on the first rows that
training fingerprinted, the figures are compared with those registered in the version's
metadata.

``--backend onnx`` runs the same evaluation on ONNX Runtime (``models.emotion.onnx_scorer``;
reports ``emotion_<v>_ort.json`` and ``learner_states_<v>_ort.json``). ``--backend both`` scores
the split and the learner test set with torch and ONNX Runtime in one run and writes only their
comparison, ``reports/emotion_<v>_onnx.json``: macro-F1 and Ekman macro-F1 per backend and their
differences, state accuracy per backend, the largest logit difference and the decisions that
differ. The ONNX backend is accepted when macro-F1 moves by at most ``ONNX_MAX_F1_DIFF`` and the
state accuracy not at all.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from models.common.registry import DEFAULT_REGISTRY_ROOT, ModelRegistry
from models.emotion.classifier import EmotionClassifier
from models.emotion.learning_states import EKMAN_LABELS
from models.emotion.metrics import (
    ECE_METHOD,
    EKMAN_METHOD,
    ekman_targets,
    evaluate_scores,
    expected_calibration_error,
    summarize_per_label,
)
from models.emotion.quantization import read_recipe
from pipelines.common import REPO_ROOT, setup_logging, use_offline_models
from pipelines.emotion.evaluate_learning_states import DEFAULT_SET, plot_confusion, read_set
from pipelines.emotion.evaluate_learning_states import evaluate as evaluate_learner_states
from pipelines.emotion.goemotions import DEFAULT_DATA, FINGERPRINT_ROWS, MODEL_NAME, read_split
from pipelines.plots import plot_per_label_f1

logger = logging.getLogger("evaluate_emotion")
# Registered and re-measured figures may differ only by float noise in the embeddings.
REPRODUCE_TOLERANCE = 1e-3
ONNX_MAX_F1_DIFF = 0.005


def check_ekman_files(data_dir: Path, split: str, targets: np.ndarray) -> dict:
    """Compare the 28 -> 7 grouping with the dataset's own ``ekman/`` files for these rows."""
    labels_path = Path(data_dir) / "ekman" / "labels.txt"
    split_path = Path(data_dir) / "ekman" / f"{split}.tsv"
    if not (labels_path.is_file() and split_path.is_file()):
        return {"checked": False, "reason": f"no {split_path}"}
    order_ok = tuple(labels_path.read_text().split()) == EKMAN_LABELS
    expected = np.zeros((len(targets), len(EKMAN_LABELS)), dtype=bool)
    with split_path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= len(targets):
                break
            ids = [int(x) for x in line.rstrip("\n").split("\t")[1].split(",")]
            expected[i, ids] = True
    mismatched = int((expected != ekman_targets(targets)).any(axis=1).sum())
    return {"checked": True, "labels_order_matches": order_ok, "rows_mismatched": mismatched}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GoEmotions folder")
    p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_ROOT)
    p.add_argument("--version", default="latest")
    p.add_argument("--split", choices=("test", "dev"), default="test")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N rows")
    p.add_argument("--out", type=Path, default=None, help="default: reports/emotion_<version>.json")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--backend",
        choices=("torch", "onnx", "both"),
        default=None,
        help="default: onnx for an int8 version (it runs there only), else torch; "
        "both: compare torch with ONNX Runtime (reports/emotion_<v>_onnx.json)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging()
    use_offline_models(args.threads)

    artifact = ModelRegistry(args.registry).load(MODEL_NAME, args.version)
    version = artifact.metadata.version
    if args.backend is None:  # the version's own runtime (EmotionClassifier's default)
        args.backend = "onnx" if read_recipe(artifact.path) is not None else "torch"
    texts, targets = read_split(args.data, args.split)
    if args.limit is not None:
        texts, targets = texts[: args.limit], targets[: args.limit]
    logger.info("evaluating %s %s on %d %s rows", MODEL_NAME, version, len(texts), args.split)
    if args.backend == "both":
        if read_recipe(artifact.path) is not None:
            raise SystemExit(
                f"{MODEL_NAME} {version} is int8 (ONNX Runtime only): its comparison with the "
                "fp32 version it was made from is python -m pipelines.emotion.quantize"
            )
        return compare_backends(args, artifact, texts, targets)

    started = time.perf_counter()
    classifier = EmotionClassifier.from_artifact(
        artifact.path, backend=args.backend, threads=args.threads
    )
    loaded_s = time.perf_counter() - started
    started = time.perf_counter()
    logits = predict_logits(classifier, texts, targets.shape[1])
    scores = classifier.calibrate(logits)
    predict_s = time.perf_counter() - started
    calibration = {
        "temperature": classifier.temperature,
        "ece_before": expected_calibration_error(1.0 / (1.0 + np.exp(-logits)), targets),
        "ece_after": expected_calibration_error(scores, targets),
        "ece_method": ECE_METHOD,
    }

    metrics = evaluate_scores(scores, targets, classifier.thresholds, classifier.ekman_thresholds)
    registered = artifact.metadata.metrics
    full = args.limit is None or args.limit >= len(read_split(args.data, args.split)[0])
    reference = None
    if full:
        reference = {
            "macro_f1": registered.get(f"{args.split}_macro_f1"),
            "ekman_macro_f1": registered.get(f"{args.split}_ekman_macro_f1"),
            "micro_f1": registered.get(f"{args.split}_micro_f1"),
            "ece": registered.get(f"{args.split}_ece_after"),
        }
    elif args.split == "test" and args.limit == FINGERPRINT_ROWS:
        reference = registered.get(f"test_first{FINGERPRINT_ROWS}")
    reproduces = None
    if reference:
        # Registered headline figures are rounded to 4 decimals.
        reproduces = all(
            v is None or abs(metrics[k] - v) <= REPRODUCE_TOLERANCE for k, v in reference.items()
        )

    report = {
        "model": MODEL_NAME,
        "version": version,
        "split": args.split,
        "limit": args.limit,
        "n": len(texts),
        "data": str(args.data),
        "ekman_method": EKMAN_METHOD,
        "artifact_format": classifier.artifact_format,
        "metrics": metrics,
        "calibration": calibration,
        "per_label_summary": summarize_per_label(metrics["per_label_f1"]) if len(texts) else {},
        "registered_reference": reference,
        "reproduces_registered": reproduces,
        "ekman_files_check": check_ekman_files(args.data, args.split, targets),
        "load_seconds": round(loaded_s, 2),
        "predict_seconds": round(predict_s, 2),
        "texts_per_second": round(len(texts) / predict_s, 1) if predict_s > 0 else None,
        "backend": args.backend,
    }
    suffix = "_ort" if args.backend == "onnx" else ""
    out = args.out or REPO_ROOT / "reports" / f"emotion_{version}{suffix}.json"
    if full and args.split == "test":
        # Beside the emotion report, named as evaluate_learner_states names it.
        learner_out = out.with_name(f"learner_states_{version}{suffix}.json")
        report["learner_states"] = learner_state_figures(
            version, classifier, registry=args.registry, out=learner_out
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    if len(texts) and args.split == "test":
        chart = plot_per_label_f1(
            metrics["per_label_f1"],
            metrics["macro_f1"],
            f"emotion {version}: GoEmotions test F1 per label (n={len(texts)})",
            out.with_name(out.stem + "_per_label_f1.png"),
        )
        logger.info("wrote %s", chart)

    print(
        f"{MODEL_NAME} {version} on {args.split} (n={len(texts)}): "
        f"macro-F1 {metrics['macro_f1']:.4f} (28 labels), "
        f"Ekman macro-F1 {metrics['ekman_macro_f1']:.4f}, micro-F1 {metrics['micro_f1']:.4f}; "
        f"ECE {calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f} "
        f"(temperature {classifier.temperature:.3f})"
    )
    if reference:
        print(f"registered: {reference} -> reproduces: {reproduces}")
    print(f"report: {out}")
    return report


def predict_logits(classifier: EmotionClassifier, texts: list[str], labels: int) -> np.ndarray:
    chunk = 1024
    parts = []
    for i in range(0, len(texts), chunk):
        parts.append(classifier.predict_logits(texts[i : i + chunk]))
        logger.info("predicted %d/%d", min(i + chunk, len(texts)), len(texts))
    return np.concatenate(parts) if parts else np.zeros((0, labels))


def compare_backends(args: argparse.Namespace, artifact, texts, targets) -> dict:
    """torch against ONNX Runtime on the same rows and the learner test set, in one run."""
    version = artifact.metadata.version
    learner_texts = read_set(DEFAULT_SET)[0]
    figures, logits, decided, states = {}, {}, {}, {}
    for backend in ("torch", "onnx"):
        started = time.perf_counter()
        clf = EmotionClassifier.from_artifact(artifact.path, backend=backend, threads=args.threads)
        loaded_s = time.perf_counter() - started
        started = time.perf_counter()
        logits[backend] = predict_logits(clf, texts, targets.shape[1])
        predict_s = time.perf_counter() - started
        scores = clf.calibrate(logits[backend])
        decided[backend] = scores >= clf.thresholds
        m = evaluate_scores(scores, targets, clf.thresholds, clf.ekman_thresholds)
        learner = evaluate_learner_states(version, registry=args.registry, classifier=clf)
        states[backend] = clf.predict_states(learner_texts)[1]
        figures[backend] = {
            "macro_f1": m["macro_f1"],
            "ekman_macro_f1": m["ekman_macro_f1"],
            "micro_f1": m["micro_f1"],
            "state_accuracy": learner["accuracy"],
            "state_macro_f1": learner["macro_f1"],
            "load_seconds": round(loaded_s, 2),
            "texts_per_second": round(len(texts) / predict_s, 1) if predict_s > 0 else None,
        }
    t, o = figures["torch"], figures["onnx"]
    diff = {k: round(o[k] - t[k], 4) for k in ("macro_f1", "ekman_macro_f1", "state_accuracy")}
    report = {
        "model": MODEL_NAME,
        "version": version,
        "split": args.split,
        "n": len(texts),
        "learner_set": str(DEFAULT_SET.relative_to(REPO_ROOT)),
        "learner_n": len(learner_texts),
        "threads": args.threads,
        "backends": figures,
        **{f"{k}_diff": v for k, v in diff.items()},
        "max_abs_logit_diff": float(np.abs(logits["onnx"] - logits["torch"]).max()),
        "max_abs_state_prob_diff": float(np.abs(states["onnx"] - states["torch"]).max()),
        "label_decisions_differing": int((decided["onnx"] != decided["torch"]).sum()),
        "state_decisions_differing": int(
            (states["onnx"].argmax(axis=1) != states["torch"].argmax(axis=1)).sum()
        ),
        "rule": f"|macro-F1 diff| <= {ONNX_MAX_F1_DIFF} and state accuracy unchanged",
        "passes": abs(diff["macro_f1"]) <= ONNX_MAX_F1_DIFF and diff["state_accuracy"] == 0,
    }
    out = args.out or REPO_ROOT / "reports" / f"emotion_{version}_onnx.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"report: {out}")
    return report


def learner_state_figures(
    version: str, classifier: EmotionClassifier, *, registry: Path, out: Path
) -> dict:
    """The eight-state figures on the learner test set, with their report (``out``) and
    confusion PNG beside it."""
    states = evaluate_learner_states(version, registry=registry, classifier=classifier)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(states, indent=2) + "\n")
    png = plot_confusion(states, out.with_name(f"{out.stem}_confusion.png"))
    calibration = states["confidence_calibration"]
    print(
        f"{MODEL_NAME} {version} on {states['set']} (n={states['n']}): state accuracy "
        f"{states['accuracy']:.4f}, macro-F1 {states['macro_f1']:.4f}; confidence ECE "
        f"{calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f}\n"
        f"report: {out}, confusion matrix: {png}"
    )
    return {k: states[k] for k in ("set", "n", "accuracy", "macro_f1", "confidence_calibration")}


if __name__ == "__main__":
    main()
