"""The shipped difficulty artifacts (models/artifacts/difficulty) and their committed reports.

Both are committed with the repo, so a missing one fails here; only the test that reads the
shared datasets skips when they are absent.

Tolerances. A report and its artifact's registered metrics are the same evaluation run twice
(at registration and by ``pipelines.difficulty.evaluate``), possibly on different CPUs: float32
kernels there differ in the last bits (~1e-7 on a probability), which moves an AUC or ECE over
60,915 rows by a few 1e-9 (v2: 3.5e-9 between the training machine and this one). 1e-5 is far
above that and a tenth of the last digit the README quotes (4 decimals). Row and student counts
are integers, compared exactly.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from models.common.registry import ModelRegistry
from models.difficulty.tracer import (
    COLD_START,
    CONFIG_FILE,
    LEGACY_CONFIG_FILE,
    LEGACY_WEIGHTS_FILE,
    UNSEEN_ITEM,
    UNSEEN_SKILL,
    WEIGHTS_FILE,
    Interaction,
    KnowledgeTracer,
)
from pipelines.common import shared_data_dir

REPO_ROOT = Path(__file__).resolve().parents[3]
KT_DIR = shared_data_dir() / "kt"
SHIPPED_VERSIONS = ("v1", "v2")  # v1: DKT; v2: the attentive tracer (served)
SAME_EVALUATION = 1e-5  # module docstring


def shipped_tracer(version: str) -> KnowledgeTracer:
    return KnowledgeTracer.from_artifact(ModelRegistry().load("difficulty", version).path)


def report(version: str) -> dict[str, Any]:
    path = REPO_ROOT / "reports" / f"difficulty_{version}.json"
    assert path.is_file(), f"{path} is committed with the repo (README: how to regenerate it)"
    return json.loads(path.read_text())


def learner_history(tracer: KnowledgeTracer, rows: int = 250) -> list[Interaction]:
    """A fixed history over the artifact's own items and skills, longer than its window."""
    rng = random.Random(0)
    items, skills = tracer.vocab.items[:50], tracer.vocab.skills[:20]
    return [
        Interaction(rng.choice(items), rng.choice(skills), rng.random() < 0.6) for _ in range(rows)
    ]


def test_the_shipped_versions_are_registered() -> None:
    assert set(SHIPPED_VERSIONS) <= set(ModelRegistry().versions("difficulty"))


@pytest.mark.parametrize("version", SHIPPED_VERSIONS)
def test_shipped_artifact_flags_and_names(version: str) -> None:
    tracer = shipped_tracer(version)
    known_skill = tracer.vocab.skills[0]
    known_item = tracer.vocab.items[0]
    [cold] = tracer.predict([], [(known_item, known_skill)])
    assert cold.flags == (COLD_START,)
    [item, skill] = tracer.predict(
        [Interaction(known_item, known_skill, True)],
        [("no-such-item", known_skill), ("no-such-item", "no-such-skill")],
    )
    assert item.flags == (UNSEEN_ITEM,)
    assert skill.flags == (UNSEEN_ITEM, UNSEEN_SKILL)
    # The global prior, returned as stored.
    assert skill.p_correct == pytest.approx(tracer.priors.global_prior, abs=1e-12)
    assert 0.5 < tracer.priors.global_prior < 0.8
    assert tracer.skill_name(known_skill)
    assert tracer.skill_name("no-such-skill") is None


@pytest.mark.parametrize("version", SHIPPED_VERSIONS)
def test_renamed_files_hold_the_registered_weights(version: str, tmp_path: Path) -> None:
    """The files were renamed (dkt.pt -> tracer_weights.pt, dkt_config.json ->
    tracer_config.json) with their bytes unchanged, and the old names still load the same."""
    artifact = ModelRegistry().load("difficulty", version)
    files = artifact.metadata.files
    assert {WEIGHTS_FILE, CONFIG_FILE} <= set(files)
    assert {LEGACY_WEIGHTS_FILE, LEGACY_CONFIG_FILE}.isdisjoint(files)
    assert all((artifact.path / name).is_file() for name in files)
    weights = (artifact.path / WEIGHTS_FILE).read_bytes()
    assert hashlib.sha256(weights).hexdigest() == artifact.metadata.provenance["weights_sha256"]
    assert "renamed_files" in artifact.metadata.provenance

    old_names = {WEIGHTS_FILE: LEGACY_WEIGHTS_FILE, CONFIG_FILE: LEGACY_CONFIG_FILE}
    for name in files:
        shutil.copy2(artifact.path / name, tmp_path / old_names.get(name, name))
    new, old = KnowledgeTracer.from_artifact(artifact.path), KnowledgeTracer.from_artifact(tmp_path)
    assert new.architecture == old.architecture
    new_state, old_state = new.model.state_dict(), old.model.state_dict()
    assert new_state.keys() == old_state.keys()
    assert all(torch.equal(new_state[k], old_state[k]) for k in new_state)  # the same bits
    hist = learner_history(new)
    candidates = [(i, s) for i, s in zip(new.vocab.items[:10], new.vocab.skills, strict=False)]
    # Same weights, same code, same machine: equal; 1e-7 keeps off bitwise kernel determinism.
    assert [p.p_correct for p in new.predict(hist, candidates)] == pytest.approx(
        [p.p_correct for p in old.predict(hist, candidates)], abs=1e-7
    )
    assert [p.p_correct for p in new.trace(hist)] == pytest.approx(
        [p.p_correct for p in old.trace(hist)], abs=1e-7
    )


@pytest.mark.parametrize("version", SHIPPED_VERSIONS)
def test_report_reproduces_the_registered_test_figures(version: str) -> None:
    written = report(version)
    registered = ModelRegistry().load("difficulty", version).metadata.metrics
    metrics = written["metrics"]
    assert written["version"] == version
    assert written["limit_students"] is None  # the whole test file, as the README quotes
    assert (metrics["rows"], metrics["students"]) == (
        registered["test_rows"],
        registered["test_students"],
    )
    for key, registered_key in (
        ("auc", "test_auc"),
        ("acc", "test_acc"),
        ("log_loss", "test_log_loss"),
        ("per_row_leaky_auc", "test_per_row_leaky_auc"),
        ("skill_prior_auc", "test_skill_prior_auc"),
    ):
        assert metrics[key] == pytest.approx(registered[registered_key], abs=SAME_EVALUATION), key


@pytest.mark.parametrize("version", SHIPPED_VERSIONS)
def test_report_compares_calibration_like_with_like(version: str) -> None:
    """Each report has the test ECE at temperature 1 and at a temperature fitted on valid."""
    written = report(version)
    temperature = written["metrics"]["temperature"]
    served_temperature = shipped_tracer(version).model.config.temperature
    # Copied from the artifact's config: only JSON's round trip in between.
    assert temperature["in_artifact"] == pytest.approx(served_temperature, abs=1e-12)
    # The served model's reliability is the calibrated one where the artifact has a
    # temperature, the uncalibrated one where it has none (the same numbers, reused).
    served_side = "calibrated" if served_temperature != 1.0 else "uncalibrated"
    assert temperature[served_side] == written["metrics"]["calibration"]
    assert temperature["test_ece_uncalibrated"] == temperature["uncalibrated"]["ece"]
    assert temperature["test_ece_calibrated"] == temperature["calibrated"]["ece"]
    assert temperature["test_ece_calibrated"] < temperature["test_ece_uncalibrated"]
    if served_temperature != 1.0:
        assert temperature["applied"] == temperature["in_artifact"]
        # The refit on the same valid split is the training pipeline's fit again: it differs
        # only by the logit round trip of clipped float32 probabilities (1.5e-5 for v2).
        assert temperature["fitted_on_valid"] == pytest.approx(served_temperature, abs=1e-3)
        registered = ModelRegistry().load("difficulty", version).metadata.metrics
        for key in ("test_ece", "test_ece_uncalibrated"):
            side = "test_ece_calibrated" if key == "test_ece" else key
            assert temperature[side] == pytest.approx(registered[key], abs=SAME_EVALUATION)
    else:
        assert temperature["applied"] == temperature["fitted_on_valid"]


@pytest.mark.data
def test_sample_auc_is_sane(tmp_path: Path) -> None:
    if not (KT_DIR / "assist2009_pid").is_dir():
        pytest.skip(f"shared data not found at {KT_DIR} (set TUTOR_DATA_DIR to the data dir)")
    from pipelines.difficulty.evaluate import main

    written = main(
        [
            "--data", str(KT_DIR),
            "--version", "v2",
            "--limit-students", "150",
            "--out", str(tmp_path / "report.json"),
        ]
    )  # fmt: skip
    metrics = written["metrics"]
    assert metrics["rows"] > 1000
    assert 0.65 < metrics["auc"] < 0.95
    assert metrics["per_row_leaky_auc"] >= metrics["auc"] - 0.02
    assert metrics["temperature"]["source"].startswith("artifact")
    assert (tmp_path / "report.json").is_file()
    assert (tmp_path / "report_reliability.png").is_file()
