"""The int8 portability check (``pipelines.emotion.portability``): its comparison, its whole run
with a stand-in for qemu (the same CPU, so nothing may differ), and what the committed report
says about the CPUs it emulated."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from models.common.registry import ModelRegistry
from models.emotion.classifier import EmotionClassifier
from pipelines.emotion import portability
from pipelines.emotion.evaluate_learning_states import DEFAULT_SET, read_set

REPO_ROOT = Path(__file__).resolve().parents[3]
SERVED_INT8 = "v5"


@pytest.fixture(scope="module")
def classifier() -> EmotionClassifier:
    artifact = ModelRegistry().load("emotion", SERVED_INT8)
    return EmotionClassifier.from_artifact(artifact.path, threads=1)


def test_compare_finds_every_change_it_reports(classifier) -> None:
    texts = read_set(DEFAULT_SET)[0][:24]
    logits, pooled = classifier.scorer.outputs(texts)
    native_answers = classifier.predict_outputs(logits, pooled)
    assert native_answers == classifier.predict(texts)  # the same as from the texts
    same = portability.compare(
        (logits, pooled), (logits.copy(), pooled.copy()), native_answers, native_answers
    )
    assert same["identical_outputs"] and same["states_changed"] == 0
    assert same["label_sets_changed"] == 0 and same["max_abs_state_probability_diff"] == 0.0

    # Another "CPU" whose logits all move by 3: every label set and most states move with them.
    shifted = logits + 3.0
    other = classifier.predict_outputs(shifted, pooled)
    moved = portability.compare((logits, pooled), (shifted, pooled), native_answers, other)
    assert not moved["identical_outputs"]
    assert moved["max_abs_logit_diff"] == pytest.approx(3.0)
    assert moved["max_abs_pooled_diff"] == 0.0
    assert moved["label_sets_changed"] > 0 and moved["max_abs_state_probability_diff"] > 0


def test_a_whole_run_on_the_same_cpu_finds_nothing(tmp_path) -> None:
    """qemu replaced by a script that runs the worker here: same kernels, so the same bits."""
    stand_in = tmp_path / "same-cpu"
    stand_in.write_text('#!/bin/sh\nshift 2\nexec "$@"\n')  # drops "-cpu <model>"
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "report.json"
    report = portability.main(
        ["--version", SERVED_INT8, "--cpus", "here", "--goemotions", "0",
         "--qemu", str(stand_in), "--out", str(out)]
    )  # fmt: skip
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["texts"] == {
        "learner_messages": len(read_set(DEFAULT_SET)[0]),
        "goemotions_test": 0,
    }
    (here,) = report["emulated"]
    assert here["cpu_features"] == report["native"]["cpu_features"]
    for name in ("int8", portability.CONTROL):
        assert here[name]["identical_outputs"], name
        assert here[name]["states_changed"] == here[name]["label_sets_changed"] == 0
        assert here[name]["batches"] == report["native"][name]["batches"] > 1


def test_the_committed_report_shows_other_cpus_give_the_same_answers() -> None:
    path = REPO_ROOT / "reports" / f"emotion_{SERVED_INT8}_portability.json"
    report = json.loads(path.read_text())
    assert report["native"]["cpu_features"]["AVX512VNNI"] is True
    assert report["emulated"], "no CPU emulated"
    for cpu in report["emulated"]:
        name = cpu["qemu_cpu"]
        # The emulated CPU lacked VNNI, and ONNX Runtime really took its AVX2 int8 kernels there:
        # the control (8-bit weights) came out different ...
        assert cpu["cpu_features"]["AVX512VNNI"] is False and cpu["cpu_features"]["AVX2"] is True
        assert cpu[portability.CONTROL]["max_abs_logit_diff"] > 0.01, name
        # ... while the served recipe kept every learner message's state and sentence's labels.
        int8 = cpu["int8"]
        assert int8["states_changed"] == 0 and int8["label_sets_changed"] == 0, name
        assert int8["max_abs_logit_diff"] <= 1e-4, name
