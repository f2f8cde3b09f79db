"""After training: calibrate on dev, measure test, check the artifact, register it.

From the worker's final checkpoint (``adapter.pt``, ``head.pt``, ``dev_logits.npy``,
``test_logits.npy``, ``train_summary.json``): fit one temperature on dev (min BCE), tune
per-label and per-Ekman-group thresholds on the calibrated dev scores, measure test (macro-F1
over 28 labels, Ekman macro-F1, micro-F1, per-label F1, ECE before/after the temperature), check
that the artifact as serving loads it (LoRA merged) gives the logits training measured, and
register adapter + head + thresholds + temperature (a few MB) with the metrics as the next
``emotion`` version.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from models.common.calibration import fit_temperature
from models.common.registry import DEFAULT_REGISTRY_ROOT, ModelRegistry
from models.emotion.artifact import ADAPTER_FILE, load_head, save_artifact
from models.emotion.classifier import EmotionClassifier
from models.emotion.encoder import ENCODER_NAME
from models.emotion.metrics import (
    ECE_METHOD,
    EKMAN_METHOD,
    THRESHOLD_GRID,
    ekman_scores,
    ekman_targets,
    evaluate_scores,
    expected_calibration_error,
    summarize_per_label,
    tune_thresholds,
)
from models.emotion.scorers import sigmoid
from pipelines.emotion.goemotions import DATASET, FINGERPRINT_ROWS, MODEL_NAME, read_split
from pipelines.emotion.train_worker import SUMMARY_FILE

logger = logging.getLogger("train_emotion")
# The merged artifact's logits may differ from the unmerged training model's by float noise only.
MERGE_TOLERANCE = 1e-3
MERGE_CHECK_TEXTS = 64


def finish(
    final_dir: Path | str,
    *,
    data: Path,
    train_config: dict,
    limit_eval: int = 0,
    registry: Path | str = DEFAULT_REGISTRY_ROOT,
    version: str | None = None,
    code_version: str | None = None,
) -> dict:
    """Calibrate, tune thresholds, measure test; register when ``code_version`` is given.

    ``code_version`` is the commit to register under (``pipelines.common.committed_code_version``,
    taken before training); ``None`` measures and checks the artifact without registering it.
    Returns ``{"metrics", "config"}`` and, when registered, ``"version"``.
    """
    final_dir = Path(final_dir)
    summary = json.loads((final_dir / SUMMARY_FILE).read_text())
    dev_logits = np.load(final_dir / "dev_logits.npy")
    test_logits = np.load(final_dir / "test_logits.npy")
    _, y_dev = read_split(data, "dev", limit=limit_eval)
    test_texts, y_te = read_split(data, "test", limit=limit_eval)
    if dev_logits.shape != y_dev.shape or test_logits.shape != y_te.shape:
        raise ValueError("checkpoint logits do not match the data (different --limit-eval?)")

    temperature = fit_temperature(dev_logits, y_dev)
    dev_scores = sigmoid(dev_logits / temperature)
    thresholds = tune_thresholds(dev_scores, y_dev)
    ekman_thresholds = tune_thresholds(ekman_scores(dev_scores), ekman_targets(y_dev))
    metrics, calibration, dev_metrics, test_metrics = goemotions_metrics(
        dev_logits, y_dev, test_logits, y_te,
        temperature=temperature, thresholds=thresholds, ekman_thresholds=ekman_thresholds,
    )  # fmt: skip
    config = {
        **train_config,
        "encoder": ENCODER_NAME,
        "model": summary["model_config"],
        "best_epoch": summary["best_epoch"],
        "history": summary["history"],
        "train_seconds": summary["train_seconds"],
        "device": summary["device"],
        "threshold_grid": [float(t) for t in THRESHOLD_GRID],
    }
    logger.info(
        "test macro-F1 %.4f (28 labels), Ekman macro-F1 %.4f, micro-F1 %.4f; dev macro-F1 %.4f",
        test_metrics["macro_f1"], test_metrics["ekman_macro_f1"], test_metrics["micro_f1"],
        dev_metrics["macro_f1"],
    )  # fmt: skip
    logger.info("calibration: %s", calibration)
    logger.info("test per-label F1: %s", metrics["test_per_label_summary"])

    with tempfile.TemporaryDirectory(prefix="emotion-") as tmp:
        shutil.copy2(final_dir / ADAPTER_FILE, Path(tmp) / ADAPTER_FILE)
        save_artifact(
            tmp, load_head(final_dir), thresholds, ekman_thresholds, temperature=temperature
        )
        check_merged_artifact(tmp, test_texts, test_logits)
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        metrics["artifact_bytes"] = size
        logger.info("artifact: %d bytes", size)
        if code_version is None:
            logger.info("--no-register: not registering")
            return {"metrics": metrics, "config": config}
        meta = ModelRegistry(registry).register(
            MODEL_NAME,
            tmp,
            dataset=DATASET,
            code_version=code_version,
            metrics=metrics,
            config=config,
            version=version,
        )
    logger.info("registered %s %s in %s", MODEL_NAME, meta.version, registry)
    return {"metrics": metrics, "config": config, "version": meta.version}


def check_merged_artifact(
    artifact_dir: Path | str, texts: list[str], training_logits: np.ndarray
) -> float:
    """The artifact as serving loads it (LoRA merged) must give the logits training measured.

    Returns the largest absolute difference over the first texts; raises past the tolerance.
    """
    n = min(len(texts), MERGE_CHECK_TEXTS)
    classifier = EmotionClassifier.from_artifact(artifact_dir)
    gap = float(np.abs(classifier.predict_logits(texts[:n]) - training_logits[:n]).max())
    logger.info("merged artifact vs training logits on %d test texts: max |diff| %.2e", n, gap)
    if gap > MERGE_TOLERANCE:
        raise RuntimeError(f"the merged artifact does not reproduce training's logits ({gap})")
    return gap


def _rounded(m: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}


def goemotions_metrics(
    dev_logits: np.ndarray,
    y_dev: np.ndarray,
    test_logits: np.ndarray,
    y_te: np.ndarray,
    *,
    temperature: float,
    thresholds: np.ndarray,
    ekman_thresholds: np.ndarray,
) -> tuple[dict, dict, dict, dict]:
    """A version's registered GoEmotions figures from its dev and test logits:
    (metrics, calibration, dev figures, test figures)."""
    raw_dev, raw_test = sigmoid(dev_logits), sigmoid(test_logits)
    dev_scores, test_scores = sigmoid(dev_logits / temperature), sigmoid(test_logits / temperature)
    dev_metrics = evaluate_scores(dev_scores, y_dev, thresholds, ekman_thresholds)
    test_metrics = evaluate_scores(test_scores, y_te, thresholds, ekman_thresholds)
    head_rows = evaluate_scores(
        test_scores[:FINGERPRINT_ROWS], y_te[:FINGERPRINT_ROWS], thresholds, ekman_thresholds
    )
    calibration = {
        "temperature": round(temperature, 4),
        "ece_method": ECE_METHOD,
        "test_ece_before": round(expected_calibration_error(raw_test, y_te), 4),
        "test_ece_after": round(test_metrics["ece"], 4),
        "dev_ece_before": round(expected_calibration_error(raw_dev, y_dev), 4),
        "dev_ece_after": round(dev_metrics["ece"], 4),
    }
    metrics = {
        "test_macro_f1": round(test_metrics["macro_f1"], 4),
        "test_ekman_macro_f1": round(test_metrics["ekman_macro_f1"], 4),
        "test_micro_f1": round(test_metrics["micro_f1"], 4),
        "dev_macro_f1": round(dev_metrics["macro_f1"], 4),
        "dev_ekman_macro_f1": round(dev_metrics["ekman_macro_f1"], 4),
        **calibration,
        "ekman_method": EKMAN_METHOD,
        "threshold_selection": (
            "per label, grid 0.05..0.95 step 0.05, max F1 on dev, on temperature-scaled scores"
        ),
        "test": _rounded(test_metrics),
        "dev": _rounded(dev_metrics),
        "test_per_label_summary": summarize_per_label(test_metrics["per_label_f1"]),
        f"test_first{FINGERPRINT_ROWS}": {
            k: round(head_rows[k], 6) for k in ("macro_f1", "micro_f1", "ekman_macro_f1")
        },
    }
    return metrics, calibration, dev_metrics, test_metrics
