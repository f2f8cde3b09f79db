"""One fold's leak-free predictions, the currency of the cross-validation harness.

Every model the harness runs (``pipelines.difficulty.training.fit_and_test`` for DKT and the
attentive tracer, ``pipelines.difficulty.lr_fit.fit_predict_fold`` for the feature model)
returns a :class:`FoldPredictions`; the stacked ensemble (``pipelines.difficulty.stacking``)
is fitted on their ``valid`` predictions and measured on their ``test`` ones, so every model's
arrays must be row-aligned.

**Canonical row order**: students in the split file's order, each student's rows in sequence
order, every row (rows of one multi-skill attempt each get the prediction made from the state
before the attempt). So ``labels == canonical_labels(split)`` for each split, and
``history_len`` counts the student's earlier rows in the file (0 for a student's first row).
What a model *reads* of that history is its own business, and its docstring says so: the neural
models read non-overlapping 200-row windows (the pyKT convention), the feature model counts
over the whole earlier history (as it serves it, up to the stored history).

``probs`` are the probabilities the model would serve: after its temperature (or Platt map)
fitted on ``valid_k``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.difficulty.data import StudentSequence

SPLITS = ("valid", "test")


@dataclass
class SplitPredictions:
    labels: np.ndarray  # int64, 0/1
    probs: np.ndarray  # float64, calibrated P(correct) as the model would serve it
    history_len: np.ndarray  # int64: how many earlier rows of this student precede the row

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.probs = np.asarray(self.probs, dtype=np.float64)
        self.history_len = np.asarray(self.history_len, dtype=np.int64)
        n = len(self.labels)
        if not len(self.probs) == len(self.history_len) == n:
            raise ValueError(
                f"ragged predictions: {n} labels, {len(self.probs)} probs, "
                f"{len(self.history_len)} history lengths"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def student_index(self) -> np.ndarray:
        """Each row's student, numbered 0.. in split order (a new student starts at history 0)."""
        return np.cumsum(self.history_len == 0) - 1

    @classmethod
    def for_split(cls, split: Sequence[StudentSequence], probs: np.ndarray) -> SplitPredictions:
        """``probs`` in canonical order for ``split``, with its labels and history lengths."""
        return cls(canonical_labels(split), probs, canonical_history_len(split))


@dataclass
class FoldPredictions:
    valid: SplitPredictions
    test: SplitPredictions
    metrics: dict[str, Any]


def canonical_labels(split: Sequence[StudentSequence]) -> np.ndarray:
    """The split's responses in canonical order (what every model's ``labels`` must equal)."""
    if not split:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.asarray(s.correct, dtype=np.int64) for s in split])


def canonical_history_len(split: Sequence[StudentSequence]) -> np.ndarray:
    """For each row in canonical order, how many rows of its student come before it."""
    if not split:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(len(s), dtype=np.int64) for s in split])


def save_fold_predictions(path: Path, predictions: FoldPredictions) -> Path:
    """One ``.npz``: ``<split>_<field>`` arrays and the metrics as JSON (``metrics_json``)."""
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        part: SplitPredictions = getattr(predictions, split)
        arrays[f"{split}_labels"] = part.labels
        arrays[f"{split}_probs"] = part.probs
        arrays[f"{split}_history_len"] = part.history_len
    arrays["metrics_json"] = np.array(json.dumps(predictions.metrics, default=_jsonable))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def load_fold_predictions(path: Path) -> FoldPredictions:
    with np.load(path, allow_pickle=False) as raw:
        parts = {
            split: SplitPredictions(
                raw[f"{split}_labels"], raw[f"{split}_probs"], raw[f"{split}_history_len"]
            )
            for split in SPLITS
        }
        metrics = json.loads(str(raw["metrics_json"]))
    return FoldPredictions(valid=parts["valid"], test=parts["test"], metrics=metrics)


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays in metrics become plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"metrics value of type {type(value).__name__} is not JSON-serialisable")
