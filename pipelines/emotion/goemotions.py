"""GoEmotions as the emotion pipelines read it: ``original/{train,dev,test}.tsv`` and labels.

One place for the dataset's layout and for the constants that training and evaluation share.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.common.vocab import GOEMOTIONS_LABELS
from pipelines.common import shared_data_dir

MODEL_NAME = "emotion"
DATASET = "goemotions (original splits)"
SPLITS = ("train", "dev", "test")
DEFAULT_DATA = shared_data_dir() / "goemotions"
# Rows of the test split (in file order) whose metrics are registered too, so that
# ``evaluate_emotion --limit`` with this many rows can check the artifact end to end.
FINGERPRINT_ROWS = 200


def read_split(data_dir: Path, split: str, *, limit: int = 0) -> tuple[list[str], np.ndarray]:
    """``original/<split>.tsv`` -> (texts, multi-hot targets [n, 28] as bool).

    ``limit``: only the first N rows in file order (smoke runs); 0 reads them all.
    """
    path = Path(data_dir) / "original" / f"{split}.tsv"
    texts: list[str] = []
    rows: list[list[int]] = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                raise ValueError(f"{path}:{line_no}: expected 3 tab-separated fields")
            texts.append(parts[0])
            rows.append([int(x) for x in parts[1].split(",")])
    targets = np.zeros((len(texts), len(GOEMOTIONS_LABELS)), dtype=bool)
    for i, ids in enumerate(rows):
        targets[i, ids] = True
    if limit:
        return texts[:limit], targets[:limit]
    return texts, targets


def check_labels_file(data_dir: Path) -> None:
    """The dataset's label names must be ``GOEMOTIONS_LABELS`` in the same order."""
    path = Path(data_dir) / "original" / "labels.txt"
    if path.is_file():
        names = tuple(path.read_text().split())
        if names != GOEMOTIONS_LABELS:
            raise ValueError(f"{path} does not match models.common.vocab.GOEMOTIONS_LABELS")
