"""Dynamic int8 quantization of the emotion encoder on CPU: accuracy cost vs speed gain.

The rule (``keep_int8``): keep int8 only when both the GoEmotions test macro-F1 over the 28
labels and the Ekman macro-F1 over the 7 groups drop by less than 0.01 (``MAX_DROP``); a
faster model that loses either is not served. The report names each figure that broke the rule
(``failed``). Both models are measured here in one run, with the float model's thresholds and
temperature; the drops are taken between the figures as reported (4 decimals).

    python -m pipelines.emotion.compare_int8 --data ../shared/data/goemotions --version v3

writes ``reports/emotion_<version>_int8.json`` (``--out`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import torch

from models.common.registry import DEFAULT_REGISTRY_ROOT, ModelRegistry
from models.emotion.classifier import EmotionClassifier
from models.emotion.metrics import evaluate_scores
from pipelines.common import REPO_ROOT, setup_logging, shared_data_dir, use_offline_models
from pipelines.emotion.goemotions import read_split

logger = logging.getLogger("compare_emotion_int8")
# Largest drop of each macro-F1 (28 labels, Ekman 7) that int8 may cost.
MAX_DROP = 0.01
RULE_FIGURES = ("macro_f1", "ekman_macro_f1")
BENCH_TEXTS = [
    "I don't understand why we flip the fraction when dividing.",
    "This is so frustrating, I keep getting the wrong answer!",
    "Oh wait, I think I finally get it now.",
    "ok next one",
] * 8  # one batch of 32


def _throughput(classifier: EmotionClassifier, seconds: float) -> float:
    classifier.predict_scores(BENCH_TEXTS)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        classifier.predict_scores(BENCH_TEXTS)
        done += len(BENCH_TEXTS)
    return done / (time.perf_counter() - started)


def _measure(classifier: EmotionClassifier, texts, targets, seconds: float) -> dict:
    metrics = evaluate_scores(
        classifier.predict_scores(texts), targets, classifier.thresholds,
        classifier.ekman_thresholds,
    )  # fmt: skip
    return {
        "macro_f1": round(metrics["macro_f1"], 4),
        "ekman_macro_f1": round(metrics["ekman_macro_f1"], 4),
        "texts_per_s_batch32": round(_throughput(classifier, seconds), 1),
    }


def int8_decision(float32: dict, int8: dict, *, max_drop: float = MAX_DROP) -> dict:
    """Apply the rule to the two models' figures: the drops, what failed, and the verdict."""
    drops = {f"{k}_drop": round(float32[k] - int8[k], 4) for k in RULE_FIGURES}
    failed = [f"{k} {v} >= {max_drop}" for k, v in drops.items() if not v < max_drop]
    return {
        "rule": (
            "keep int8 only when the 28-label macro-F1 and the Ekman macro-F1 each drop by "
            f"less than {max_drop}"
        ),
        **drops,
        "failed": failed,
        "keep_int8": not failed,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=shared_data_dir() / "goemotions")
    parser.add_argument("--version", default="latest")
    parser.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_ROOT)
    parser.add_argument("--threads", type=int, default=1, help="as a serving replica has")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    setup_logging()
    use_offline_models(args.threads)

    artifact = ModelRegistry(args.registry).load("emotion", args.version)
    texts, targets = read_split(args.data, "test")
    float_model = EmotionClassifier.from_artifact(artifact.path)
    # Throughput is this machine's, under whatever else runs on it: the load says how busy it was.
    report = {
        "version": artifact.metadata.version,
        "threads": args.threads,
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
    }
    report["float32"] = _measure(float_model, texts, targets, args.seconds)

    int8_model = EmotionClassifier.from_artifact(artifact.path)
    int8_model.scorer.model = torch.ao.quantization.quantize_dynamic(
        int8_model.scorer.model, {torch.nn.Linear}, dtype=torch.qint8
    )
    report["int8_dynamic"] = _measure(int8_model, texts, targets, args.seconds)
    report["speedup"] = round(
        report["int8_dynamic"]["texts_per_s_batch32"] / report["float32"]["texts_per_s_batch32"], 2
    )
    report["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    report.update(int8_decision(report["float32"], report["int8_dynamic"]))
    logger.info("%s", json.dumps(report))
    out = args.out or REPO_ROOT / "reports" / f"emotion_{artifact.metadata.version}_int8.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
