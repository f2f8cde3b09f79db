"""The shipped int8 emotion version (``pipelines.emotion.quantize``): its committed report keeps
the rule it was registered under, and its state head is what the recipe fits on its own int8
features."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from models.common.registry import ModelRegistry
from models.emotion.classifier import EmotionClassifier
from models.emotion.quantization import read_recipe
from pipelines.emotion.evaluate import ONNX_MAX_F1_DIFF
from pipelines.emotion.train_state_head import fit_and_report, head_arguments
from tests.unit.emotion.test_state_head import _assert_figures_close

REPO_ROOT = Path(__file__).resolve().parents[3]
REGISTRY = ModelRegistry()
INT8_VERSIONS = [
    v for v in REGISTRY.versions("emotion") if read_recipe(REGISTRY.load("emotion", v).path)
]


@pytest.fixture(scope="module")
def int8_version():
    assert INT8_VERSIONS, "no int8 emotion version: python -m pipelines.emotion.quantize"
    return REGISTRY.load("emotion", INT8_VERSIONS[-1])


def test_the_committed_report_keeps_the_rule_and_matches_the_version(int8_version) -> None:
    source = int8_version.metadata.config["quantized_from"]
    report = json.loads((REPO_ROOT / "reports" / f"emotion_{source}_int8.json").read_text())
    assert report["registered_version"] == int8_version.metadata.version
    fp32, int8 = report["fp32_onnx"], report["int8_onnx"]
    assert report["passes"] is True
    assert abs(int8["macro_f1"] - fp32["macro_f1"]) <= ONNX_MAX_F1_DIFF
    assert int8["state_accuracy"] >= fp32["state_accuracy"]
    metrics = int8_version.metadata.metrics
    assert metrics["test_macro_f1"] == int8["macro_f1"]
    assert metrics["learner_state_head"] == report["state_head"]
    recipe = read_recipe(int8_version.path)
    assert {k: v for k, v in recipe.items() if k != "calibration_texts"} == report["recipe"]


def test_the_int8_state_head_reproduces_its_registered_report(int8_version, tmp_path) -> None:
    """Refitted on the int8 encoder's features of the learner sets (quantized here, in a
    temporary cache, from the version's own recipe)."""
    classifier = EmotionClassifier.from_artifact(
        int8_version.path, backend="onnx", threads=1, onnx_cache_dir=tmp_path
    )
    parser = argparse.ArgumentParser()
    head_arguments(parser, default_version=int8_version.metadata.version)
    _, _, fresh = fit_and_report(classifier, parser.parse_args([]))
    fresh = json.loads(json.dumps(fresh))
    _assert_figures_close(fresh, int8_version.metadata.metrics["learner_state_head"], "int8 head")
