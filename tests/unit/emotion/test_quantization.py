"""int8 emotion versions on ONNX Runtime (models/emotion/quantization.py): the recipe file, the
cached int8 file, and what static quantization promises: a text scores the same alone or in any
batch, close to fp32.

The served v4 artifact is exported and quantized once for the module, into a temporary cache,
with a small calibration set (64 learner messages) so that the module stays fast."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.common.registry import DEFAULT_REGISTRY_ROOT
from models.emotion import quantization
from models.emotion.classifier import EmotionClassifier
from models.emotion.onnx_scorer import cached_model
from models.emotion.quantization import (
    INT8_STATIC,
    QUANTIZATION_FILE,
    check_recipe,
    read_recipe,
    write_recipe,
)
from pipelines.emotion.evaluate_learning_states import read_set

REPO_ROOT = Path(__file__).resolve().parents[3]
V4 = Path(DEFAULT_REGISTRY_ROOT) / "emotion" / "v4"
LEARNER = REPO_ROOT / "tests" / "data"
RECIPE = {
    **INT8_STATIC,
    "calibration_texts": read_set(LEARNER / "learner_messages_train.jsonl")[0][:64],
}
TEXTS = read_set(LEARNER / "learner_messages_test.jsonl")[0][:40]
# int8 against fp32: measured mean |logit diff| 0.13 with the shipped recipe's 512 calibration
# sentences; this module's 64 give a little more. A broken quantization (wrong scales, a
# saturated layer) moves logits by whole units.
MEAN_LOGIT_GAP = 0.35
# The same text alone and batched: float noise only (measured ~2e-6). Dynamic quantization,
# whose activation scales follow the batch, moved logits by up to 1.6 here.
SAME_TEXT_ATOL = 1e-4


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> dict:
    cache = tmp_path_factory.mktemp("onnx_cache")
    fp32 = EmotionClassifier.from_artifact(V4, backend="onnx", threads=1, onnx_cache_dir=cache)
    int8 = EmotionClassifier.from_artifact(
        V4, backend="onnx", threads=1, onnx_cache_dir=cache, quantization=RECIPE
    )
    return {"cache": cache, "fp32": fp32, "int8": int8}


def test_only_the_known_recipe_is_accepted(tmp_path: Path) -> None:
    write_recipe(tmp_path, RECIPE)
    assert read_recipe(tmp_path) == RECIPE
    assert read_recipe(V4) is None  # an fp32 version
    with pytest.raises(ValueError, match="unknown quantization method"):
        check_recipe({**RECIPE, "method": "onnxruntime.quantization.quantize_dynamic"})
    with pytest.raises(ValueError, match="exactly the keys"):
        check_recipe({**RECIPE, "per_tensor_everything": True})
    with pytest.raises(ValueError, match="needs calibration texts"):
        check_recipe({**RECIPE, "calibration_texts": []})


def test_the_int8_file_is_cached_beside_the_fp32_one_and_smaller(loaded) -> None:
    fp32_path, int8_path = (loaded[k].scorer.model_path for k in ("fp32", "int8"))
    assert int8_path.parent == fp32_path.parent
    assert int8_path.name.startswith(fp32_path.stem + "-int8-")
    # The 47 MB word-embedding table stays fp32; the quantized MatMuls shrink to a quarter.
    assert int8_path.stat().st_size < 0.85 * fp32_path.stat().st_size
    assert not list(loaded["cache"].glob("*.tmp")), "a temporary file was left behind"


def test_a_text_scores_the_same_alone_or_in_any_batch(loaded) -> None:
    scorer = loaded["int8"].scorer
    batched_logits, batched_pooled = scorer.outputs(TEXTS)
    reversed_logits = scorer.outputs(TEXTS[::-1])[0][::-1]
    np.testing.assert_allclose(reversed_logits, batched_logits, atol=SAME_TEXT_ATOL, rtol=0)
    for i in (0, 7, 19, 39):
        alone_logits, alone_pooled = scorer.outputs([TEXTS[i]])
        np.testing.assert_allclose(alone_logits[0], batched_logits[i], atol=SAME_TEXT_ATOL, rtol=0)
        np.testing.assert_allclose(alone_pooled[0], batched_pooled[i], atol=SAME_TEXT_ATOL, rtol=0)


def test_int8_stays_close_to_fp32(loaded) -> None:
    int8, fp32 = loaded["int8"].scorer.logits(TEXTS), loaded["fp32"].scorer.logits(TEXTS)
    gap = np.abs(int8 - fp32)
    assert gap.mean() < MEAN_LOGIT_GAP, gap.mean()
    assert not np.allclose(int8, fp32, atol=1e-3), "the int8 file runs fp32 weights"


def test_a_second_load_reuses_the_cached_int8_file(loaded, monkeypatch) -> None:
    def no_quantize(*args, **kwargs):
        raise AssertionError("quantized again although the cache holds the file")

    monkeypatch.setattr(quantization, "quantize", no_quantize)
    path, timings = cached_model(V4, cache_dir=loaded["cache"], quantization=RECIPE)
    assert path == loaded["int8"].scorer.model_path
    other = {**RECIPE, "calibration_texts": RECIPE["calibration_texts"][:32]}
    with pytest.raises(AssertionError, match="quantized again"):
        cached_model(V4, cache_dir=loaded["cache"], quantization=other)  # another recipe


def test_an_int8_version_runs_its_recipe_and_torch_warns(loaded, tmp_path, caplog) -> None:
    version = tmp_path / "v9"
    shutil.copytree(V4, version)
    write_recipe(version, RECIPE)
    assert (version / QUANTIZATION_FILE).is_file()
    served = EmotionClassifier.from_artifact(
        version, backend="onnx", threads=1, onnx_cache_dir=loaded["cache"]
    )
    assert served.scorer.model_path.name == loaded["int8"].scorer.model_path.name
    by_default = EmotionClassifier.from_artifact(version, onnx_cache_dir=loaded["cache"])
    assert by_default.scorer.model_path == served.scorer.model_path  # its own runtime
    with caplog.at_level(logging.WARNING, logger="models.emotion.classifier"):
        EmotionClassifier.from_artifact(version, backend="torch")
    assert "int8 weights run on ONNX Runtime only" in caplog.text
