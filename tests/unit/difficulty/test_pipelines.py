"""The difficulty pipelines without Ray or data: architectures by name, the temperature fit and
its like-with-like comparison, registration's code version, the CV summary.

Tolerances: temperatures are found by a golden-section search over log T run to ~1e-16 of its
interval, on logits recovered from float32 probabilities clipped at 1e-6; the same fit twice
agrees to ~1e-5, so 1e-3 says "the same temperature" with room. Means and differences of a few
float64 numbers are exact to ~1e-16: 1e-12.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from models.common.calibration import reliability
from models.difficulty.akt import AKT
from models.difficulty.data import StudentSequence
from models.difficulty.dkt import DKT
from pipelines import common
from pipelines.difficulty import train
from pipelines.difficulty.evaluate import (
    compare_temperatures,
    fit_valid_temperature,
    predict_rows,
)
from pipelines.difficulty.training import ARCHITECTURES, build_model, calibrate

from .test_tracer import small_tracer

KWARGS = {"window": 200, "batch_size": 8}


def reliability_of(model, vocab, priors, test: list[StudentSequence]) -> dict:
    labels, probs = predict_rows(model, vocab, priors, test, **KWARGS)
    return reliability(probs, labels)


def sequences(n: int, seed: int) -> list[StudentSequence]:
    """Random learners over the small tracer's items and skills (multi-skill item b included)."""
    rng = random.Random(seed)
    out = []
    for s in range(n):
        items, skills = [], []
        for _ in range(rng.randint(3, 12)):
            item = rng.choice("abcd")
            for skill in ["1", "2", "3"] if item == "b" else [rng.choice("123")]:
                items.append(item)
                skills.append(skill)
        correct = [int(rng.random() < 0.65) for _ in items]
        out.append(StudentSequence(f"s{s}", items, skills, correct))
    return out


# ------------------------------------------------------------------------------ architectures
@pytest.mark.parametrize(("name", "network"), [("dkt", DKT), ("akt", AKT)])
def test_each_registered_architecture_builds_with_its_default_dropout(name, network) -> None:
    vocab = small_tracer().vocab
    args = train.parse_args(["--model", name])
    model = build_model(args, vocab)
    assert isinstance(model, network)
    assert model.config.num_skills == vocab.num_skills
    assert model.config.dropout == pytest.approx(ARCHITECTURES[name].default_dropout, abs=1e-12)
    chosen = build_model(train.parse_args(["--model", name, "--dropout", "0.1"]), vocab)
    assert chosen.config.dropout == pytest.approx(0.1, abs=1e-12)


def test_the_cli_offers_exactly_the_registered_architectures() -> None:
    with pytest.raises(SystemExit):
        train.parse_args(["--model", "bkt"])
    args = train.parse_args([])
    args.model = "bkt"
    with pytest.raises(ValueError, match="bkt"):
        build_model(args, small_tracer().vocab)


# -------------------------------------------------------------------------------- temperature
@pytest.mark.parametrize("architecture", ["dkt", "akt"])
def test_a_fitted_temperature_replaces_the_models_own(architecture: str) -> None:
    tracer = small_tracer(seed=3, architecture=architecture)
    valid = sequences(40, seed=1)
    model, vocab, priors = tracer.model, tracer.vocab, tracer.priors
    at_one = fit_valid_temperature(model, vocab, priors, valid, **KWARGS)
    model.config = dataclasses.replace(model.config, temperature=3.0)
    assert fit_valid_temperature(model, vocab, priors, valid, **KWARGS) == pytest.approx(
        at_one, abs=1e-3
    )
    assert calibrate(model, vocab, priors, valid, KWARGS) == pytest.approx(at_one, abs=1e-3)
    assert model.config.temperature == pytest.approx(at_one, abs=1e-3)


@pytest.mark.parametrize("own_temperature", [1.0, 2.5])
def test_calibration_is_compared_at_temperature_one_and_at_a_fitted_one(
    own_temperature: float,
) -> None:
    tracer = small_tracer(seed=5, architecture="akt")
    model, vocab, priors = tracer.model, tracer.vocab, tracer.priors
    model.config = dataclasses.replace(model.config, temperature=own_temperature)
    valid, test = sequences(40, seed=2), sequences(40, seed=3)
    served = reliability_of(model, vocab, priors, test)
    result = compare_temperatures(model, vocab, priors, valid, test, served=served, **KWARGS)

    # Copies, not computations: compared as they are.
    assert model.config.temperature == own_temperature  # the artifact's model is unchanged
    assert result["in_artifact"] == own_temperature
    model.config = dataclasses.replace(model.config, temperature=1.0)
    raw = reliability_of(model, vocab, priors, test)
    model.config = dataclasses.replace(model.config, temperature=result["applied"])
    fitted = reliability_of(model, vocab, priors, test)
    assert result["test_ece_uncalibrated"] == pytest.approx(raw["ece"], abs=1e-6)
    assert result["test_ece_calibrated"] == pytest.approx(fitted["ece"], abs=1e-6)
    if own_temperature == 1.0:  # none in the artifact: fitted on valid here
        assert result["applied"] == result["fitted_on_valid"]
        assert result["uncalibrated"] is served
    else:  # the artifact's own is the calibrated one
        assert result["applied"] == own_temperature
        assert result["calibrated"] is served


# ---------------------------------------------------------------------- registering a version
class Trained(Exception):
    """Raised by the stand-in for the Ray Train job: training was reached."""


def test_a_registering_run_takes_its_code_version_before_training(monkeypatch) -> None:
    def run_training(args):
        raise Trained

    monkeypatch.setattr(common, "code_version", lambda: "abc1234-dirty")
    monkeypatch.setattr(train, "run_training", run_training)
    with pytest.raises(common.DirtyTreeError):
        train.main(["--model", "dkt"])  # refused before any training
    with pytest.raises(Trained):
        train.main(["--model", "dkt", "--allow-dirty"])
    with pytest.raises(Trained):
        train.main(["--model", "dkt", "--no-register"])  # nothing registered: not checked


# ------------------------------------------------------------------------------ the CV harness
def test_cross_validation_summary_pairs_folds_against_dkt() -> None:
    from pipelines.difficulty.cv_report import markdown_table, summarise

    def run(model: str, fold: int, auc: float) -> dict:
        return {
            "dataset": "d", "model": model, "fold": fold, "test_auc": auc, "test_acc": 0.7,
            "test_per_row_leaky_auc": auc + 0.01, "test_ece": 0.02, "best_epoch": 3,
        }  # fmt: skip

    runs = [run("dkt", 1, 0.70), run("dkt", 2, 0.72), run("akt", 1, 0.75), run("akt", 2, 0.73)]
    summary = summarise(runs)["d"]
    assert summary["dkt"]["test_auc"]["mean"] == pytest.approx(0.71, abs=1e-12)
    # The sample standard deviation of 0.75 and 0.73: 0.02 / sqrt(2); 1e-6 as printed.
    assert summary["akt"]["test_auc"]["std"] == pytest.approx(0.0141421, abs=1e-6)
    gain = summary["akt"]["auc_gain_over_dkt"]
    assert gain["mean"] == pytest.approx(0.03, abs=1e-12)
    assert gain["min"] == pytest.approx(0.01, abs=1e-12)
    assert "auc_gain_over_dkt" not in summary["dkt"]
    assert "+0.0300" in markdown_table({"d": summary})
