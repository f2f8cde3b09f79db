"""One fold's leak-free valid and test predictions, the form the stacked ensemble reads.

Canonical row order: students in the split file's order, each student's rows in sequence order
(every row; the rows of one attempt share the state before it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class SplitPredictions:
    labels: np.ndarray  # int64, 0/1
    probs: np.ndarray  # float64, calibrated P(correct) as the model would serve it
    history_len: np.ndarray  # int64: how many earlier rows of this student precede the row


@dataclass
class FoldPredictions:
    valid: SplitPredictions
    test: SplitPredictions
    metrics: dict[str, Any]
