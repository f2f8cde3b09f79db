"""The cross-validation harness end to end on a tiny on-disk dataset, without Ray: canonical
row order of the neural models' predictions, every run's .npz, a stand-in feature model, the
stack after its bases, and the one report over all datasets.

Tolerances: the same network's probabilities for one student, alone or batched with others
(other padding, other batch order): a few float32 ulps, 1e-6 (as in test_tracer.py). Metrics
recomputed from saved float64 arrays: the same arithmetic, 1e-9.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from models.difficulty.data import StudentSequence
from pipelines.difficulty.evaluate import predict_rows
from pipelines.difficulty.fold_predictions import canonical_labels

from .test_tracer import small_tracer


def random_students(n: int, seed: int, *, min_len: int = 3, max_len: int = 30):
    """Learners over the small tracer's items a-d (b: the multi-skill item, skills 1-3)."""
    rng = random.Random(seed)
    out = []
    for s in range(n):
        items, skills = [], []
        for _ in range(rng.randint(min_len, max_len)):
            item = rng.choice("abcd")
            for skill in ["1", "2", "3"] if item == "b" else [rng.choice("123")]:
                items.append(item)
                skills.append(skill)
        correct = [int(rng.random() < 0.65) for _ in items]
        out.append(StudentSequence(f"{s}", items, skills, correct))
    return out


@pytest.mark.parametrize("architecture", ["dkt", "akt"])
def test_predict_rows_returns_canonical_order(architecture: str) -> None:
    """Windows are batched by length; rows still come back student by student, each student's
    predictions the ones it gets alone (window 8: students span several windows)."""
    tracer = small_tracer(architecture=architecture)
    students = random_students(9, seed=3)
    kwargs = {"window": 8, "batch_size": 4}
    labels, probs = predict_rows(tracer.model, tracer.vocab, tracer.priors, students, **kwargs)
    np.testing.assert_array_equal(labels, canonical_labels(students))
    alone = [
        predict_rows(tracer.model, tracer.vocab, tracer.priors, [s], **kwargs)[1] for s in students
    ]
    np.testing.assert_allclose(probs, np.concatenate(alone), atol=1e-6)
