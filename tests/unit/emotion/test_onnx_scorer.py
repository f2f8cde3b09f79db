"""The ONNX Runtime backend of the fine-tuned emotion encoder (models/emotion/onnx_scorer.py) and
token-count batching (models/emotion/batching.py).

The served v4 artifact is exported once for the module, into a temporary cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from models.common.registry import DEFAULT_REGISTRY_ROOT
from models.emotion import onnx_scorer
from models.emotion.batching import group_sizes, token_batches
from models.emotion.classifier import EmotionClassifier
from models.emotion.encoder import load_tokenizer
from models.emotion.onnx_scorer import OnnxScorer, cache_key, cached_model

ARTIFACTS = Path(DEFAULT_REGISTRY_ROOT) / "emotion"
SERVED = ARTIFACTS / "v4"
# fp32 on both sides; measured max differences are ~1e-5 (logits) and ~2e-6 (pooled).
ATOL = 1e-4
TEXTS = [
    "ok",
    "I don't understand why we flip the fraction when dividing.",
    "This is so frustrating, I keep getting the wrong answer!",
    "Oh wait, I think I finally get it now, thanks",
    # Longer than max_length (64 tokens): truncated the same way by both backends.
    "I have been working on this problem set for three hours and every time I think I am close "
    "the answer turns out to be wrong again, and the textbook example skips the one step that "
    "I actually need, so now I am honestly not sure whether I understand any of it at all, "
    "and the quiz is tomorrow morning at nine",
]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> dict:
    cache = tmp_path_factory.mktemp("onnx_cache")
    onnx = EmotionClassifier.from_artifact(SERVED, backend="onnx", threads=1, onnx_cache_dir=cache)
    torch_clf = EmotionClassifier.from_artifact(SERVED)
    return {"cache": cache, "onnx": onnx, "torch": torch_clf}


def test_onnx_outputs_match_torch_batched_and_single(loaded) -> None:
    logits, pooled = loaded["onnx"].scorer.outputs(TEXTS)
    ref_logits, ref_pooled = loaded["torch"].scorer.outputs(TEXTS)
    assert logits.shape == (len(TEXTS), 28) and pooled.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(logits, ref_logits, atol=ATOL, rtol=0)
    np.testing.assert_allclose(pooled, ref_pooled, atol=ATOL, rtol=0)
    for i, text in enumerate(TEXTS):
        alone_logits, alone_pooled = loaded["onnx"].scorer.outputs([text])
        np.testing.assert_allclose(alone_logits[0], ref_logits[i], atol=ATOL, rtol=0)
        # A text scores the same alone as inside a padded batch.
        np.testing.assert_allclose(alone_logits[0], logits[i], atol=ATOL, rtol=0)
        np.testing.assert_allclose(alone_pooled[0], pooled[i], atol=ATOL, rtol=0)


def test_onnx_classifier_predicts_what_torch_predicts(loaded) -> None:
    onnx, ref = loaded["onnx"].predict(TEXTS), loaded["torch"].predict(TEXTS)
    for a, b in zip(onnx, ref, strict=True):
        assert a.state == b.state and a.predicted == b.predicted
        assert a.confidence == pytest.approx(b.confidence, abs=1e-4)
    assert loaded["onnx"].predict([]) == []


def test_grouped_batches_give_the_same_outputs(loaded) -> None:
    scorer = loaded["onnx"].scorer
    default = scorer.overhead_tokens
    grouped = scorer.outputs(TEXTS)
    try:
        scorer.overhead_tokens = None  # one padded batch
        plain = scorer.outputs(TEXTS)
        scorer.overhead_tokens = 0.0  # every distinct length its own batch
        split = scorer.outputs(TEXTS)
    finally:
        scorer.overhead_tokens = default
    np.testing.assert_allclose(grouped[0], plain[0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(split[0], plain[0], atol=ATOL, rtol=0)


def test_a_second_load_reuses_the_cached_file(loaded, monkeypatch) -> None:
    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds the file")

    monkeypatch.setattr(onnx_scorer, "export_model", no_export)
    path, timings = cached_model(SERVED, cache_dir=loaded["cache"])
    assert path == loaded["onnx"].scorer.model_path
    assert set(timings) == {"key_s"}
    again = OnnxScorer.from_artifact(SERVED, cache_dir=loaded["cache"])
    np.testing.assert_allclose(
        again.logits(TEXTS[:2]), loaded["onnx"].scorer.logits(TEXTS[:2]), atol=1e-6, rtol=0
    )
    assert not list(loaded["cache"].glob("*.tmp")), "a temporary file was left behind"


def test_the_cache_key_follows_the_artifact_files(tmp_path) -> None:
    copy = tmp_path / "v4"
    shutil.copytree(SERVED, copy)
    assert cache_key(copy, fuse=True) == cache_key(SERVED, fuse=True)
    assert cache_key(SERVED, fuse=False) != cache_key(SERVED, fuse=True)
    (copy / "thresholds.json").write_text("{}")  # outside the graph: same file
    assert cache_key(copy, fuse=True) == cache_key(SERVED, fuse=True)
    with (copy / "head.pt").open("ab") as f:
        f.write(b"\0")
    assert cache_key(copy, fuse=True) != cache_key(SERVED, fuse=True)


def test_onnx_backend_refuses_a_v1_artifact(tmp_path) -> None:
    with pytest.raises(ValueError, match="fine-tuned .*v1.*backend='torch'"):
        EmotionClassifier.from_artifact(ARTIFACTS / "v1", backend="onnx", onnx_cache_dir=tmp_path)
    with pytest.raises(ValueError, match="backend must be one of"):
        EmotionClassifier.from_artifact(SERVED, backend="tensorrt")


# -- token-count batching -------------------------------------------------------------------


def test_group_sizes_cover_every_row_within_the_batch_size() -> None:
    lengths = sorted([5, 5, 6, 9, 12, 12, 13, 30, 31, 60] * 7)
    assert group_sizes(lengths, 32, None) == [32, 32, 6]
    for overhead in (0.0, 16.0, 1e9):
        sizes = group_sizes(lengths, 32, overhead)
        assert sum(sizes) == len(lengths) and max(sizes) <= 32
    assert len(group_sizes(lengths, 32, 1e9)) == 3  # costly calls: as few batches as possible
    start = 0
    for size in group_sizes(lengths, 32, 0.0):  # free calls: no padding at all
        assert len(set(lengths[start : start + size])) == 1
        start += size
    assert group_sizes([], 32, 16.0) == []


def test_token_batches_pad_each_group_to_its_longest_row() -> None:
    tokenizer = load_tokenizer()
    batches = token_batches(tokenizer, TEXTS, max_length=64, batch_size=2, overhead_tokens=None)
    seen = sorted(i for idx, _, _ in batches for i in idx)
    assert seen == list(range(len(TEXTS)))
    for idx, ids, mask in batches:
        assert ids.shape == mask.shape == (len(idx), int(mask.sum(axis=1).max()))
        assert ids.dtype == mask.dtype == np.int64
        for row, i in enumerate(idx):
            expected = tokenizer(TEXTS[i], truncation=True, max_length=64)["input_ids"]
            assert ids[row, : len(expected)].tolist() == expected
            assert mask[row].sum() == len(expected)
    widths = [ids.shape[1] for _, ids, _ in batches]
    assert widths == sorted(widths) and max(widths) == 64
