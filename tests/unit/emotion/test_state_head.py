"""The learned learner-state head: its arithmetic, its training, and the shipped version."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from models.common.registry import ModelRegistry
from models.common.vocab import LEARNING_STATES
from models.emotion.state_head import StateHead, state_features
from pipelines.emotion.evaluate_learning_states import read_set
from pipelines.emotion.train_state_head import decontaminate, fit_state_head

REPO_ROOT = Path(__file__).resolve().parents[3]
TRAIN_SET = REPO_ROOT / "tests" / "data" / "learner_messages_train.jsonl"


def _head(d: int = 5, seed: int = 0) -> StateHead:
    rng = np.random.default_rng(seed)
    return StateHead(
        mean=rng.normal(size=d),
        scale=rng.uniform(0.5, 2.0, size=d),
        coef=rng.normal(size=(len(LEARNING_STATES), d)),
        intercept=rng.normal(size=len(LEARNING_STATES)),
    )


def test_probabilities_are_a_softmax_of_the_standardised_affine_map():
    head = _head()
    x = np.random.default_rng(1).normal(size=(7, head.input_dim)) * 50  # large: no overflow
    p = head.probabilities(x)
    assert p.shape == (7, len(LEARNING_STATES))
    assert np.allclose(p.sum(axis=1), 1.0) and (p >= 0).all()
    z = ((x - head.mean) / head.scale) @ head.coef.T + head.intercept
    assert np.array_equal(p.argmax(axis=1), z.argmax(axis=1))


def test_save_and_load_round_trip(tmp_path: Path):
    head = _head()
    head.save(tmp_path)
    assert StateHead.exists(tmp_path)
    loaded = StateHead.load(tmp_path)
    x = np.random.default_rng(2).normal(size=(4, head.input_dim))
    # Stored as float32: equal to float32 precision.
    assert np.allclose(loaded.probabilities(x), head.probabilities(x), atol=1e-5)


def test_inconsistent_shapes_are_refused():
    head = _head()
    with pytest.raises(ValueError):
        StateHead(head.mean, head.scale, head.coef[:3], head.intercept)
    with pytest.raises(ValueError):
        StateHead(head.mean, np.zeros_like(head.scale), head.coef, head.intercept)


def test_state_features_concatenate_embedding_then_logits():
    pooled, logits = np.ones((2, 384)), np.zeros((2, 28))
    assert state_features(pooled, logits).shape == (2, 412)
    assert state_features(pooled, logits)[:, :384].sum() == 2 * 384


def test_fit_learns_separable_states():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(len(LEARNING_STATES), 12)) * 4
    gold = np.repeat(np.arange(len(LEARNING_STATES)), 30)
    x = centres[gold] + rng.normal(size=(len(gold), 12))
    head, selection = fit_state_head(x, gold)
    assert selection["C"] in [float(c) for c in selection["cv_accuracy"]]
    held_out_gold = np.repeat(np.arange(len(LEARNING_STATES)), 10)
    held_out = centres[held_out_gold] + rng.normal(size=(len(held_out_gold), 12))
    assert (head.probabilities(held_out).argmax(axis=1) == held_out_gold).mean() > 0.95


def test_decontaminate_drops_exact_and_near_duplicates_only():
    texts = ["OK", "where did the 2 come from??", "I love photosynthesis", "x = 4"]
    states = ["neutral", "confused", "engaged", "neutral"]
    held_out = ["ok", "wait, where did the 2 come from?", "what is a vector space"]
    kept, kept_states, dropped = decontaminate(texts, states, held_out, max_similarity=0.6)
    assert dropped == ["OK", "where did the 2 come from??"]
    assert kept == ["I love photosynthesis", "x = 4"]
    assert kept_states == ["engaged", "neutral"]


def test_training_set_is_valid_and_balanced():
    texts, states = read_set(TRAIN_SET)
    assert len(texts) == len({" ".join(t.lower().split()) for t in texts})
    assert set(Counter(states).values()) == {50}


def test_shipped_state_head_reproduces_its_registered_report():
    """Retraining from the source version (no registration) gives the registered figures."""
    registry = ModelRegistry()
    with_head = [
        v
        for v in registry.versions("emotion")
        if StateHead.exists(registry.load("emotion", v).path)
    ]
    if not with_head:
        pytest.skip("no emotion version with a state head is registered")
    metadata = registry.load("emotion", with_head[-1]).metadata
    registered = metadata.metrics["learner_state_head"]
    from pipelines.emotion.train_state_head import main

    fresh = main(["--version", metadata.config["state_head_from"], "--no-register"])
    assert json.loads(json.dumps(fresh)) == registered
