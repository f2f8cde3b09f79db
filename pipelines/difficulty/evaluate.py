"""Evaluate a registered difficulty (knowledge-tracing) model on a fold's test file.

    python -m pipelines.difficulty.evaluate --data ../shared/data/kt [--version v1] [--fold 1]
        [--limit-students 200] [--out reports/difficulty_v1.json]

Protocol (the figure to quote): leak-free. Consecutive rows with the same problem id are one
attempt, and every row of an attempt is predicted from the model's state before the attempt.
Sequences are cut into non-overlapping windows of the model's ``max_history`` rows, each
starting from the initial state (the pyKT convention), so a row sees at most ``max_history - 1``
earlier rows, as in serving. The per-row ("leaky") AUC, where a multi-skill problem's later rows
see its earlier rows' shared response, is reported beside it only for comparison with early
papers. ``skill_prior_auc`` is a same-run baseline: each row predicted by its skill's training
mean correctness.

An LR tracer's artifact (architecture ``lr``) is evaluated by
``pipelines.difficulty.lr_evaluate``: the same protocol and keys, its counts read as served (up
to its ``max_history`` rows), no per-row figure. A stack (``stack``) by
``pipelines.difficulty.stack_fit.evaluate_stack``: its members by their own protocols, combined.

Calibration, like with like (``metrics.temperature``): the test ECE at temperature 1 (the raw
network) and at a temperature fitted on the fold's valid split: the artifact's own when it has
one (the train pipeline fits it there), else fitted here the same way, the artifact unchanged.
The other metrics are the served model's, at the artifact's temperature.

The metric code here is shared with ``pipelines.difficulty.train``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from models.common.calibration import fit_temperature, reliability
from models.common.registry import DEFAULT_REGISTRY_ROOT, ModelRegistry
from models.difficulty.akt import AKT
from models.difficulty.data import Priors, StudentSequence, Vocabulary, load_split, windows
from models.difficulty.dkt import DKT, encode_batch
from models.difficulty.loader import load_tracer
from models.difficulty.lr_tracer import ARCHITECTURE as LR_ARCHITECTURE
from models.difficulty.stack_tracer import ARCHITECTURE as STACK_ARCHITECTURE
from pipelines.common import code_version, setup_logging, shared_data_dir
from pipelines.plots import plot_reliability

log = logging.getLogger("pipelines.difficulty.evaluate")

MODEL_NAME = "difficulty"
DEFAULT_DATA_DIR = shared_data_dir() / "kt"
DEFAULT_DATASET = "assist2009_pid"


@torch.inference_mode()
def predict_rows(
    model: DKT | AKT,
    vocab: Vocabulary,
    priors: Priors,
    sequences: Sequence[StudentSequence],
    *,
    protocol: str = "attempt",
    window: int = 200,
    batch_size: int = 64,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, P(correct)) for every row, in canonical order (students in ``sequences``'
    order, each student's rows in sequence order: ``pipelines.difficulty.fold_predictions``).

    Windows are batched by length (less padding) and put back in order afterwards. Rows whose
    skill the vocabulary lacks get the skill's prior, else the global prior, as in serving.
    """
    was_training = model.training
    model.eval()
    chunks = windows(sequences, window)  # canonical order: each student's windows in turn
    by_length = sorted(range(len(chunks)), key=lambda i: len(chunks[i]))
    labels: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(chunks)
    probs: list[np.ndarray] = [np.zeros(0)] * len(chunks)
    for start in range(0, len(by_length), batch_size):
        indices = by_length[start : start + batch_size]
        batch = encode_batch([chunks[j] for j in indices], vocab, protocol=protocol)
        batch = batch.to(device)
        logits, _ = model(batch.skills, batch.correct, batch.context_index, items=batch.items)
        p = torch.sigmoid(logits).cpu()
        for i, j in enumerate(indices):
            chunk = chunks[j]
            row_p = p[i, : len(chunk)].numpy().astype(np.float64)
            unknown = batch.skills[i, : len(chunk)].cpu().numpy() == 0
            if unknown.any():
                row_p[unknown] = [
                    priors.for_skill(s) for s, u in zip(chunk.skill_ids, unknown, strict=True) if u
                ]
            labels[j] = np.asarray(chunk.correct, dtype=np.int64)
            probs[j] = row_p
    model.train(was_training)
    if not labels:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(labels), np.concatenate(probs)


def binary_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """AUC, accuracy at 0.5, log loss and the number of rows."""
    if len(labels) == 0:
        raise ValueError("no rows to evaluate")
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    auc = float(roc_auc_score(labels, probs)) if len(np.unique(labels)) == 2 else float("nan")
    return {
        "auc": auc,
        "acc": float(np.mean((probs >= 0.5) == (labels == 1))),
        "log_loss": float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))),
        "rows": int(len(labels)),
    }


def evaluate_model(
    model: DKT | AKT,
    vocab: Vocabulary,
    priors: Priors,
    sequences: Sequence[StudentSequence],
    *,
    window: int = 200,
    batch_size: int = 64,
    device: str = "cpu",
    leaky: bool = True,
    predictions: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Leak-free metrics (``auc``, ``acc``, ``log_loss``), plus with ``leaky`` the per-row AUC
    (``per_row_leaky_auc``) and the skill-prior baseline's AUC. ``predictions``: the leak-free
    ``predict_rows`` result for ``sequences`` when the caller already has it (saves a pass)."""
    kwargs = {"window": window, "batch_size": batch_size, "device": device}
    if predictions is None:
        predictions = predict_rows(model, vocab, priors, sequences, protocol="attempt", **kwargs)
    labels, probs = predictions
    result: dict[str, Any] = {"protocol": "leak_free_attempt", **binary_metrics(labels, probs)}
    result["calibration"] = reliability(probs, labels)
    result["students"] = len(sequences)
    result["unseen_skill_rows"] = sum(
        1 for seq in sequences for s in seq.skill_ids if not vocab.has_skill(s)
    )
    result["unseen_item_rows"] = sum(
        1 for seq in sequences for i in seq.item_ids if not vocab.has_item(i)
    )
    if leaky:
        row_labels, row_probs = predict_rows(
            model, vocab, priors, sequences, protocol="row", **kwargs
        )
        assert np.array_equal(row_labels, labels)
        result["per_row_leaky_auc"] = binary_metrics(row_labels, row_probs)["auc"]
        prior_probs = np.concatenate(
            [[priors.for_skill(s) for s in seq.skill_ids] for seq in windows(sequences, window)]
        )
        prior_labels = np.concatenate([seq.correct for seq in windows(sequences, window)])
        result["skill_prior_auc"] = binary_metrics(prior_labels, prior_probs)["auc"]
    return result


def fit_valid_temperature(
    model: DKT | AKT,
    vocab: Vocabulary,
    priors: Priors,
    valid: Sequence[StudentSequence],
    **kwargs: Any,
) -> float:
    """The one temperature that minimises the leak-free valid log loss of the model's logits.

    The model's own temperature is divided out first, so the result replaces it (it does not
    stack on it). Rows of skills the model lacks carry their prior, not a logit; they are rare
    enough in valid not to matter to one scalar.
    """
    labels, probs = predict_rows(model, vocab, priors, valid, protocol="attempt", **kwargs)
    clipped = np.clip(probs, 1e-6, 1 - 1e-6)
    logits = np.log(clipped / (1 - clipped)) * model.config.temperature
    return fit_temperature(logits, labels)


def reliability_at_temperature(
    model: DKT | AKT,
    temperature: float,
    vocab: Vocabulary,
    priors: Priors,
    sequences: Sequence[StudentSequence],
    **kwargs: Any,
) -> dict[str, Any]:
    """The leak-free reliability (ECE and bins) with the model's temperature set to
    ``temperature`` for this one pass; the model keeps its own afterwards."""
    own = model.config
    model.config = dataclasses.replace(own, temperature=temperature)
    try:
        labels, probs = predict_rows(model, vocab, priors, sequences, protocol="attempt", **kwargs)
    finally:
        model.config = own
    return reliability(probs, labels)


def temperature_report(
    in_artifact: float,
    fitted: float,
    applied: float,
    source: str,
    uncalibrated: dict[str, Any],
    calibrated: dict[str, Any],
) -> dict[str, Any]:
    """A report's ``metrics.temperature`` block, the same keys for every kind of version."""
    return {
        "in_artifact": in_artifact,
        "fitted_on_valid": fitted,
        "applied": applied,
        "source": source,
        "test_ece_uncalibrated": uncalibrated["ece"],
        "test_ece_calibrated": calibrated["ece"],
        "uncalibrated": uncalibrated,
        "calibrated": calibrated,
    }


def compare_temperatures(
    model: DKT | AKT,
    vocab: Vocabulary,
    priors: Priors,
    valid: Sequence[StudentSequence],
    test: Sequence[StudentSequence],
    *,
    served: dict[str, Any],
    **kwargs: Any,
) -> dict[str, Any]:
    """Test ECE before (temperature 1) and after a temperature fitted on valid (module
    docstring); ``served`` is the test reliability at the artifact's temperature, reused."""
    in_artifact = float(model.config.temperature)
    fitted = fit_valid_temperature(model, vocab, priors, valid, **kwargs)
    if in_artifact != 1.0:
        applied, source = in_artifact, "artifact (fitted on valid when trained)"
        calibrated = served
        uncalibrated = reliability_at_temperature(model, 1.0, vocab, priors, test, **kwargs)
    else:
        applied, source = fitted, "fitted on valid here (the artifact keeps 1.0)"
        calibrated = reliability_at_temperature(model, fitted, vocab, priors, test, **kwargs)
        uncalibrated = served
    return temperature_report(in_artifact, fitted, applied, source, uncalibrated, calibrated)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="the kt/ data dir")
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument(
        "--fold",
        type=int,
        default=None,
        help="test fold (default: the fold the model was trained on)",
    )
    parser.add_argument("--version", default="latest")
    parser.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY_ROOT)
    parser.add_argument(
        "--limit-students", type=int, default=None, help="evaluate only the first N test students"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON report (default reports/difficulty_<version>.json)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    setup_logging()
    torch.set_num_threads(args.threads)
    artifact = ModelRegistry(args.registry).load(MODEL_NAME, args.version)
    meta = artifact.metadata
    trained_fold = meta.config.get("fold")
    fold = args.fold if args.fold is not None else int(trained_fold or 1)
    if trained_fold is not None and fold != int(trained_fold):
        log.warning(
            "evaluating fold %d's test file with a model trained on fold %s: those test "
            "students were in its training data, so the figures are optimistic",
            fold,
            trained_fold,
        )
    tracer = load_tracer(artifact.path)
    sequences = load_split(args.data, args.dataset, "test", fold)
    valid = load_split(args.data, args.dataset, "valid", fold)
    if args.limit_students is not None:
        sequences = sequences[: args.limit_students]
        valid = valid[: args.limit_students]
    started = time.perf_counter()
    if tracer.architecture == LR_ARCHITECTURE:
        from pipelines.difficulty.lr_evaluate import evaluate_lr  # imports this module

        metrics = evaluate_lr(tracer, valid, sequences)
    elif tracer.architecture == STACK_ARCHITECTURE:
        from pipelines.difficulty.stack_fit import evaluate_stack  # imports this module

        metrics = evaluate_stack(tracer, valid, sequences)
    else:
        kwargs = {"window": tracer.max_history, "batch_size": args.batch_size}
        model, vocab, priors = tracer.model, tracer.vocab, tracer.priors
        metrics = evaluate_model(model, vocab, priors, sequences, **kwargs)
        metrics["temperature"] = compare_temperatures(
            model, vocab, priors, valid, sequences, served=metrics["calibration"], **kwargs
        )
    report = {
        "model": MODEL_NAME,
        "version": meta.version,
        "dataset": f"{args.dataset} fold {fold} test",
        "limit_students": args.limit_students,
        "window": tracer.max_history,
        "metrics": metrics,
        "registered_metrics": meta.metrics,
        "code_version": code_version(),
        "seconds": round(time.perf_counter() - started, 2),
    }
    out = args.out or Path("reports") / f"difficulty_{meta.version}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    temperature = metrics["temperature"]
    name = f"{meta.version} ({tracer.architecture})"
    plot_reliability(
        {
            report["dataset"]: {
                f"{name}, T = 1": temperature["uncalibrated"],
                f"{name}, T = {temperature['applied']:.3f}": temperature["calibrated"],
            }
        },
        "Reliability: leak-free test predictions,\nbefore and after a temperature fitted on valid",
        out.with_name(f"{out.stem}_reliability.png"),
    )
    log.info(
        "%s %s on %s (%d students, %d rows): leak-free AUC %.4f ACC %.4f | per-row (leaky) "
        "AUC %s | skill-prior AUC %.4f | ECE %.4f at T = 1, %.4f at T = %.3f (%s) -> %s",
        MODEL_NAME,
        meta.version,
        report["dataset"],
        metrics["students"],
        metrics["rows"],
        metrics["auc"],
        metrics["acc"],
        f"{metrics['per_row_leaky_auc']:.4f}" if "per_row_leaky_auc" in metrics else "n/a",
        metrics["skill_prior_auc"],
        temperature["test_ece_uncalibrated"],
        temperature["test_ece_calibrated"],
        temperature["applied"],
        temperature["source"],
        out,
    )
    print(json.dumps({k: v for k, v in metrics.items() if k != "temperature"}, indent=2))
    print(json.dumps({k: v for k, v in temperature.items() if not isinstance(v, dict)}, indent=2))
    return report


if __name__ == "__main__":
    main()
