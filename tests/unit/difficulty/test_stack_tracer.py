"""The served stacked ensemble: the same contract as every tracer (flags, fallbacks, trace ==
predict on each prefix, mastery, the artifact), its combination equal to the fitted
regression's, and the registration pipeline on a small registry.

Tolerances: 1e-9 where the same float64 arithmetic runs in another order; 1e-6 after an
artifact round trip (the LR member stores float32 coefficients, the networks float32 weights).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from models.difficulty.loader import artifact_architecture, load_tracer
from models.difficulty.stack_tracer import StackedTracer
from models.difficulty.tracer_api import COLD_START, UNSEEN_ITEM, UNSEEN_SKILL, Interaction
from pipelines.difficulty.fold_predictions import FoldPredictions, SplitPredictions
from pipelines.difficulty.stacking import fit_predict_stack
from tests.unit.difficulty import test_lr_tracer, test_tracer

ITEMS, SKILLS, CORRECT = test_tracer.ITEMS, test_tracer.SKILLS, test_tracer.CORRECT


def small_stack(*, interactions: bool = True) -> StackedTracer:
    members = {
        "dkt": test_tracer.small_tracer(seed=1, architecture="dkt"),
        "akt": test_tracer.small_tracer(seed=2, architecture="akt"),
        "lr": test_lr_tracer.small_tracer(seed=3),
    }
    return StackedTracer(
        members,
        member_coef=[0.4, 0.5, 0.6],
        history_coef=-0.05,
        intercept=0.1,
        interaction_coef=[0.02, -0.01, 0.03] if interactions else None,
    )


def history(correct: list[int]) -> list[Interaction]:
    return [Interaction(i, s, bool(c)) for i, s, c in zip(ITEMS, SKILLS, correct, strict=True)]


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_predict_combines_every_members_logit_with_the_history_length() -> None:
    stack = small_stack()
    hist = history(CORRECT)
    [got] = stack.predict(hist, [("a", "1")])
    z = 0.1 - 0.05 * math.log1p(len(hist))
    for member, a, c in zip(
        stack.members.values(), [0.4, 0.5, 0.6], [0.02, -0.01, 0.03], strict=True
    ):
        [p] = member.predict(hist, [("a", "1")])
        z += a * logit(p.p_correct) + c * logit(p.p_correct) * math.log1p(len(hist))
    assert got.p_correct == pytest.approx(1 / (1 + math.exp(-z)), abs=1e-9)
    assert got.basis == "model" and got.flags == ()


def test_flags_and_fallbacks_are_the_primary_members() -> None:
    stack = small_stack()
    assert stack.primary_name == "lr"
    cold = stack.predict([], [("a", "1"), ("new", "1"), ("new", "99")])
    assert [p.flags for p in cold] == [
        (COLD_START,),
        (COLD_START, UNSEEN_ITEM),
        (COLD_START, UNSEEN_ITEM, UNSEEN_SKILL),
    ]
    # An unseen skill's prior passes through unchanged, as from any tracer.
    assert cold[2].basis == "global_prior"
    assert cold[2].p_correct == pytest.approx(stack.priors.global_prior, abs=1e-12)
    assert [p.basis for p in cold[:2]] == ["population", "population"]
    assert stack.predict(history(CORRECT), []) == []


def test_trace_matches_predict_from_the_start_of_each_attempt() -> None:
    stack = small_stack()
    hist = history(CORRECT)
    traced = stack.trace(hist)
    assert len(traced) == len(hist)
    starts = [0, 1, 1, 1, 4, 5]  # rows 1-3 are one multi-skill attempt
    for t, step in enumerate(hist):
        [expected] = stack.predict(hist[: starts[t]], [(step.item_id, step.skill_id)])
        if starts[t] == t:  # the stack's history length is the row's, as the harness counts
            assert traced[t].p_correct == pytest.approx(expected.p_correct, abs=1e-6)
        assert traced[t].flags == expected.flags


def test_a_multi_skill_response_never_reaches_its_own_rows() -> None:
    stack = small_stack()
    right, wrong = stack.trace(history(CORRECT)), stack.trace(history([1, 1, 1, 1, 1, 1]))
    assert [p.p_correct for p in right[:4]] == pytest.approx(
        [p.p_correct for p in wrong[:4]], abs=1e-9
    )


def test_mastery_combines_members_and_keeps_priors_for_unknown_skills() -> None:
    stack = small_stack(interactions=False)
    hist = history(CORRECT) + [Interaction("z", "42", True)]
    mastery = stack.mastery(hist)
    assert set(mastery) == {"1", "2", "3", "42"}
    assert mastery["42"] == pytest.approx(stack.priors.global_prior, abs=1e-12)
    expected = stack.combine([m.mastery(hist)["2"] for m in stack.members.values()], len(hist))
    assert mastery["2"] == pytest.approx(expected, abs=1e-9)
    assert stack.mastery([]) == {}


def test_artifact_round_trip_through_load_tracer(tmp_path: Path) -> None:
    stack = small_stack()
    stack.save(tmp_path)
    assert artifact_architecture(tmp_path) == "stack"
    loaded = load_tracer(tmp_path)
    assert isinstance(loaded, StackedTracer)
    assert list(loaded.members) == ["dkt", "akt", "lr"]
    hist = history(CORRECT)
    assert [p.p_correct for p in loaded.trace(hist)] == pytest.approx(
        [p.p_correct for p in stack.trace(hist)], abs=1e-6
    )
    assert loaded.skill_name("3") == "Fractions"
    assert loaded.describe()["interactions"] is True


def test_combine_equals_the_fitted_regression() -> None:
    """What ``stack_fit`` registers is what ``stacking`` fitted: the served formula reproduces
    the regression's probabilities from the same inputs."""
    rng = np.random.default_rng(0)

    def split(n: int) -> SplitPredictions:
        labels = (rng.random(n) < 0.6).astype(np.int64)
        history_len = np.concatenate([np.arange(n // 4)] * 4)
        return SplitPredictions(labels, np.zeros(n), history_len)

    valid, test = split(800), split(400)
    bases = {}
    for shift, name in enumerate(["dkt", "akt", "lr"]):
        probs = {}
        for key, part in (("valid", valid), ("test", test)):
            noisy = part.labels * 0.3 + rng.random(len(part)) * 0.6 + 0.05 * shift
            probs[key] = np.clip(noisy, 0.02, 0.98)
        bases[name] = FoldPredictions(
            valid=SplitPredictions(valid.labels, probs["valid"], valid.history_len),
            test=SplitPredictions(test.labels, probs["test"], test.history_len),
            metrics={},
        )
    fitted = fit_predict_stack(bases)
    coef = fitted.metrics["coefficients"]
    got_interactions = fitted.metrics["interactions"]
    stack = StackedTracer(
        {"dkt": test_tracer.small_tracer(), "akt": test_tracer.small_tracer(),
         "lr": test_lr_tracer.small_tracer()},
        member_coef=[coef[f"logit_{n}"] for n in bases],
        history_coef=coef["log1p_history"],
        intercept=fitted.metrics["intercept"],
        interaction_coef=[coef[f"logit_{n}*log1p_history"] for n in bases]
        if got_interactions
        else None,
    )  # fmt: skip
    served = [
        stack.combine([b.test.probs[r] for b in bases.values()], int(test.history_len[r]))
        for r in range(len(test))
    ]
    assert served == pytest.approx(list(fitted.test.probs), abs=1e-9)


def test_stack_fit_registers_a_stack_of_registered_versions(tmp_path: Path) -> None:
    """``pipelines.difficulty.stack_fit`` over three registered members of one fold: fitted on
    valid, its served combination checked against the fit, registered with members copied."""
    from models.common.registry import ModelRegistry
    from pipelines.difficulty import stack_fit

    from .test_cv_harness import DATASET, write_toy_dataset

    data = write_toy_dataset(tmp_path / "kt")
    registry = ModelRegistry(tmp_path / "registry")
    members = [
        test_tracer.small_tracer(seed=1, architecture="dkt"),
        test_tracer.small_tracer(seed=2, architecture="akt"),
        test_lr_tracer.small_tracer(seed=3),
    ]
    for member in members:
        member.save(tmp_path / member.architecture)
        registry.register(
            "difficulty", tmp_path / member.architecture, dataset=f"{DATASET} fold 1",
            code_version="test", config={"dataset": DATASET, "fold": 1},
        )  # fmt: skip
    result = stack_fit.main(
        ["--members", "v1", "v2", "v3", "--data", str(data), "--registry",
         str(tmp_path / "registry"), "--allow-dirty"]
    )  # fmt: skip
    assert result["version"] == "v4"
    assert result["config"]["members"] == {"dkt": "v1", "akt": "v2", "lr": "v3"}
    assert 0.0 <= result["metrics"]["test_auc"] <= 1.0
    served = load_tracer(registry.load("difficulty", "v4").path)
    assert isinstance(served, StackedTracer) and list(served.members) == ["dkt", "akt", "lr"]
    assert "members/lr/vocab.json" in registry.load("difficulty", "v4").metadata.files
    assert len(served.predict(history(CORRECT), [("a", "1"), ("zz", "9")])) == 2


def test_evaluate_reports_a_stack_like_any_version(tmp_path: Path) -> None:
    """``evaluate.py --version`` on a stack: the same report keys, the served probabilities."""
    from models.common.registry import ModelRegistry
    from pipelines.difficulty import evaluate, stack_fit

    from .test_cv_harness import DATASET, write_toy_dataset

    data = write_toy_dataset(tmp_path / "kt")
    stack = small_stack()
    stack.save(tmp_path / "stack")
    registry = ModelRegistry(tmp_path / "registry")
    registry.register(
        "difficulty", tmp_path / "stack", dataset=f"{DATASET} fold 1", code_version="test",
        config={"dataset": DATASET, "fold": 1},
    )  # fmt: skip
    report = evaluate.main(
        ["--data", str(data), "--dataset", DATASET, "--version", "v1", "--registry",
         str(tmp_path / "registry"), "--out", str(tmp_path / "report.json")]
    )  # fmt: skip
    metrics = report["metrics"]
    assert {"auc", "acc", "log_loss", "calibration", "skill_prior_auc"} <= set(metrics)
    test = evaluate.load_split(data, DATASET, "test", 1)
    probs = stack_fit.stack_probabilities(stack, test)
    assert metrics["rows"] == len(probs) and 0.0 < probs.min() <= probs.max() < 1.0
    assert (tmp_path / "report_reliability.png").is_file()
