"""The learned learner-state head: its arithmetic, its training, and the shipped version."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from models.common.registry import ModelRegistry
from models.common.vocab import LEARNING_STATES
from models.emotion.quantization import read_recipe
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


# Retrained on another CPU, the encoder's float32 sums differ in their last bits; that moves the
# head's probabilities by ~1e-6 and can flip a message that sits on a decision boundary (a
# different lbfgs path at weak L2 does the same). One message is 0.0028 of a CV accuracy (358
# messages), 0.0125 of the dev accuracy (80) and 0.0104 of the test accuracy and ECE (96).
# 0.015 admits one flipped message in the smallest set, or five in the CV, and nothing that
# changes a conclusion; choices (C) and counts of messages must match exactly.
FIGURE_TOLERANCE = 0.015


def _assert_figures_close(fresh, stored, where: str = "report") -> None:
    """Same structure, same strings, ints and choices; floats within ``FIGURE_TOLERANCE``."""
    if isinstance(stored, dict):
        assert isinstance(fresh, dict) and set(fresh) == set(stored), where
        for key in stored:
            _assert_figures_close(fresh[key], stored[key], f"{where}.{key}")
    elif isinstance(stored, float) and not where.endswith(".C"):
        assert fresh == pytest.approx(stored, abs=FIGURE_TOLERANCE), where
    else:
        assert fresh == stored, where


def test_shipped_state_head_reproduces_its_registered_report(tmp_path: Path):
    """Retraining from the source version (no registration) gives the registered figures, and
    the nested CV of the committed report."""
    registry = ModelRegistry()
    # fp32 versions; an int8 version's head is refitted by pipelines.emotion.quantize
    # (tests/unit/emotion/test_int8_version.py).
    with_head = [
        v
        for v in registry.versions("emotion")
        if StateHead.exists(registry.load("emotion", v).path)
        and read_recipe(registry.load("emotion", v).path) is None
    ]
    assert with_head, "no emotion version with a state head is registered"
    metadata = registry.load("emotion", with_head[-1]).metadata
    registered = metadata.metrics["learner_state_head"]
    source = metadata.config["state_head_from"]
    committed_path = REPO_ROOT / "reports" / f"learner_state_head_{source}.json"
    assert committed_path.is_file(), f"no {committed_path.name}: run train_state_head"
    committed = json.loads(committed_path.read_text())
    from pipelines.emotion.train_state_head import main

    out = tmp_path / "report.json"
    fresh = json.loads(json.dumps(main(["--version", source, "--no-register", "--out", str(out)])))
    assert json.loads(out.read_text())["nested_cv"] == fresh["nested_cv"]
    # Registered before the nested CV existed: its figures are the rest of the report.
    _assert_figures_close({k: fresh[k] for k in registered}, registered, "registered")
    assert committed["source_version"] == source
    nested, stored = fresh["nested_cv"], committed["nested_cv"]
    assert nested["n"] == stored["n"]  # every training message is scored once
    assert nested["accuracy"] == pytest.approx(stored["accuracy"], abs=FIGURE_TOLERANCE)
    assert committed["cv_accuracy"]["nested"] == stored["accuracy"]
    _assert_figures_close(
        {k: fresh[k] for k in registered}, {k: committed[k] for k in registered}, "committed"
    )
