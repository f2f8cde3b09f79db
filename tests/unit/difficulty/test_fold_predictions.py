"""The harness's shared prediction format: canonical order, and an .npz round trip."""

from __future__ import annotations

import numpy as np
import pytest

from models.difficulty.data import StudentSequence
from pipelines.difficulty.fold_predictions import (
    FoldPredictions,
    SplitPredictions,
    canonical_history_len,
    canonical_labels,
    load_fold_predictions,
    save_fold_predictions,
)

SPLIT = [
    StudentSequence("a", ["1", "2", "2"], ["7", "7", "8"], [1, 0, 0]),
    StudentSequence("b", ["3"], ["9"], [1]),
    StudentSequence("c", ["4", "5"], ["7", "9"], [0, 1]),
]


def test_canonical_order_is_students_in_file_order_then_rows() -> None:
    assert canonical_labels(SPLIT).tolist() == [1, 0, 0, 1, 0, 1]
    assert canonical_history_len(SPLIT).tolist() == [0, 1, 2, 0, 0, 1]
    part = SplitPredictions.for_split(SPLIT, np.linspace(0.1, 0.9, 6))
    assert part.student_index().tolist() == [0, 0, 0, 1, 2, 2]


def test_ragged_predictions_are_refused() -> None:
    with pytest.raises(ValueError, match="ragged"):
        SplitPredictions(np.zeros(3), np.zeros(2), np.zeros(3))


def test_npz_round_trip_keeps_arrays_and_metrics(tmp_path) -> None:
    valid = SplitPredictions.for_split(SPLIT, np.full(6, 0.25))
    test = SplitPredictions.for_split(SPLIT[:2], np.array([0.9, 0.2, 0.3, 0.8]))
    metrics = {"test_auc": np.float64(0.75), "history": [{"epoch": 1}], "temperature": None}
    path = save_fold_predictions(
        tmp_path / "x" / "dkt_fold1.npz", FoldPredictions(valid, test, metrics)
    )
    loaded = load_fold_predictions(path)
    np.testing.assert_allclose(loaded.test.probs, test.probs)
    assert loaded.valid.labels.dtype == np.int64
    assert loaded.test.history_len.tolist() == [0, 1, 2, 0]
    assert loaded.metrics == {"test_auc": 0.75, "history": [{"epoch": 1}], "temperature": None}
