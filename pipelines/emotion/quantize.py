"""Make an int8 emotion version: the source's encoder with int8 weights on ONNX Runtime, and a
learner-state head fitted on the int8 encoder's own features.

    python -m pipelines.emotion.quantize [--version v4] [--no-register] [--allow-dirty]

The recipe is ``models.emotion.quantization.INT8_STATIC`` (static quantization; why, and what
stays fp32, is in that module), calibrated on ``CALIBRATION_TEXTS`` GoEmotions train sentences
drawn with ``SEED``; they are stored in the version, so serving never needs the dataset.
The label thresholds and temperature stay the source's: they were tuned on fp32 scores, and
re-tuning them on int8 scores would make a new model, not the same one made cheaper. The state
head is refitted with ``train_state_head``'s recipe (train set, L2 by CV, temperature on dev),
because the fp32 head read on int8 features changes close calls.

One run measures the source (fp32 on ONNX Runtime) and the int8 version side by side: GoEmotions
test macro-F1 / Ekman / micro-F1, learner-state accuracy on the test set, the ONNX file's size
and one text's forward-pass CPU time (median over the learner messages, both in this run). The
version is registered only when it keeps the quality of the source: macro-F1 within
``ONNX_MAX_F1_DIFF`` and learner-state accuracy no lower. The report,
``reports/emotion_<source>_int8.json``, is written either way.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import time
from pathlib import Path

from models.emotion.classifier import EmotionClassifier
from models.emotion.quantization import (
    CALIBRATION_TEXTS,
    INT8_STATIC,
    read_recipe,
    write_recipe,
)
from pipelines.common import REPO_ROOT
from pipelines.emotion.evaluate import ONNX_MAX_F1_DIFF, predict_logits
from pipelines.emotion.evaluate_learning_states import evaluate as evaluate_learner_states
from pipelines.emotion.evaluate_learning_states import read_set
from pipelines.emotion.goemotions import DEFAULT_DATA, read_split
from pipelines.emotion.train_finish import goemotions_metrics
from pipelines.emotion.train_state_head import (
    begin_run,
    fit_and_report,
    head_arguments,
    register_with_head,
)

logger = logging.getLogger("quantize_emotion")
TIMED_TEXTS = 200
SEED = 0


def single_text_cpu_ms(classifiers: dict[str, EmotionClassifier], texts: list[str]) -> dict:
    """Median CPU time of one text's forward pass on this thread, per classifier. CPU time,
    not wall time (the machine may be shared; CPU time is what a replica pays); the classifiers
    take turns text by text, so a busy spell of the machine falls on both alike."""
    times: dict[str, list[float]] = {name: [] for name in classifiers}
    for classifier in classifiers.values():
        classifier.predict(texts[:1])  # the first call sets up the session's kernels
    for text in texts[:TIMED_TEXTS]:
        for name, classifier in classifiers.items():
            started = time.thread_time()
            classifier.predict([text])
            times[name].append((time.thread_time() - started) * 1000)
    return {name: round(statistics.median(t), 3) for name, t in times.items()}


def measure(
    classifier: EmotionClassifier, splits: dict, args: argparse.Namespace, source: str
) -> tuple[dict, dict]:
    """(figures for the report, the registered-metrics block) of one classifier."""
    logits = {
        name: predict_logits(classifier, texts, y.shape[1]) for name, (texts, y) in splits.items()
    }
    metrics, *_ = goemotions_metrics(
        logits["dev"], splits["dev"][1], logits["test"], splits["test"][1],
        temperature=classifier.temperature, thresholds=classifier.thresholds,
        ekman_thresholds=classifier.ekman_thresholds,
    )  # fmt: skip
    states = evaluate_learner_states(
        source, args.test_set, registry=args.registry, classifier=classifier
    )
    figures = {
        "macro_f1": metrics["test_macro_f1"],
        "ekman_macro_f1": metrics["test_ekman_macro_f1"],
        "micro_f1": metrics["test_micro_f1"],
        "ece": metrics["test_ece_after"],
        "state_accuracy": round(states["accuracy"], 4),
        "state_macro_f1": round(states["macro_f1"], 4),
        "onnx_mb": round(classifier.scorer.model_path.stat().st_size / 1e6, 1),
    }
    return figures, metrics


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    head_arguments(parser, default_version="v4")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GoEmotions folder")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: reports/emotion_<version>_int8.json"
    )
    args = parser.parse_args(argv)
    code_version, registry, source = begin_run(args)
    version = source.metadata.version
    if read_recipe(source.path) is not None:
        raise SystemExit(f"emotion {version} is already int8")
    splits = {name: read_split(args.data, name) for name in ("dev", "test")}
    train_texts = read_split(args.data, "train")[0]
    recipe = {
        **INT8_STATIC,
        "calibration_texts": random.Random(SEED).sample(train_texts, CALIBRATION_TEXTS),
    }
    fp32 = EmotionClassifier.from_artifact(source.path, backend="onnx", threads=args.threads)
    int8 = EmotionClassifier.from_artifact(
        source.path, backend="onnx", threads=args.threads, quantization=recipe
    )
    head, calibration, head_report = fit_and_report(int8, args)
    int8.state_head, int8.state_temperature = head, float(calibration["temperature"])
    fp32_figures, _ = measure(fp32, splits, args, version)
    int8_figures, int8_metrics = measure(int8, splits, args, version)
    cpu = single_text_cpu_ms({"fp32": fp32, "int8": int8}, read_set(args.train_set)[0])
    fp32_figures["single_text_cpu_ms"], int8_figures["single_text_cpu_ms"] = (
        cpu["fp32"],
        cpu["int8"],
    )
    diff = {k: round(int8_figures[k] - fp32_figures[k], 4) for k in fp32_figures}
    passes = (
        abs(diff["macro_f1"]) <= ONNX_MAX_F1_DIFF
        and int8_figures["state_accuracy"] >= fp32_figures["state_accuracy"]
    )
    report = {
        "command": f"python -m pipelines.emotion.quantize --version {version}"
        + (" --no-register" if code_version is None else ""),
        "source_version": version,
        "recipe": {k: v for k, v in recipe.items() if k != "calibration_texts"},
        "calibration": f"{CALIBRATION_TEXTS} GoEmotions train sentences, random.Random({SEED})",
        "kept_from_source": "label thresholds, label temperature (tuned on fp32 dev scores)",
        "test_n": len(splits["test"][0]),
        "learner_set": Path(args.test_set).name,
        "fp32_onnx": fp32_figures,
        "int8_onnx": int8_figures,
        "int8_minus_fp32": diff,
        "cpu_ratio": round(
            int8_figures["single_text_cpu_ms"] / fp32_figures["single_text_cpu_ms"], 3
        ),
        "rule": f"|macro-F1 diff| <= {ONNX_MAX_F1_DIFF} and learner-state accuracy no lower",
        "passes": passes,
        "state_head": head_report,
        "registered_version": None,
    }
    if passes and code_version is not None:
        metadata = register_with_head(
            registry, source, head, calibration, head_report, code_version,
            extra_files=lambda directory: write_recipe(directory, recipe),
            metrics={**int8_metrics, "quantized_from": {"version": version, **fp32_figures}},
            config={"quantization": report["recipe"], "quantized_from": version},
        )  # fmt: skip
        report["registered_version"] = metadata.version
    out = args.out or REPO_ROOT / "reports" / f"emotion_{version}_int8.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("fp32_onnx", "int8_onnx", "passes")}, indent=2))
    print(f"report: {out}; registered: {report['registered_version']}")
    if not passes:
        raise SystemExit(f"int8 {version} does not keep the source's quality: {diff}")
    return report


if __name__ == "__main__":
    main()
