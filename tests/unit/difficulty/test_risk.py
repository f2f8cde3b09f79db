"""The at-risk model without Ray or data: leak-free features, reasons, disengagement, metrics.

Tolerances: features and probabilities are float64 sums of a few dozen terms, equal to ~1e-12
when computed twice; precision values are ratios of small integers (exact to 1e-12).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from models.common.registry import ModelRegistry
from models.difficulty.data import StudentSequence
from models.difficulty.risk import REGISTRY_NAME, RiskModel, assess, risk_reasons
from models.difficulty.risk_features import FEATURES, Answer, AnswerFeatures, TurnObservation
from pipelines.difficulty.at_risk_eval import attempts, cut_points, paired, precision_at


def _learner(rng: random.Random, n: int, p: float) -> list[Answer]:
    return [Answer(skill_id=str(rng.randrange(4)), correct=rng.random() < p) for _ in range(n)]


def _failing() -> list[Answer]:
    """Good at skill 7 for 20 answers, then failing it: the clearest at-risk learner."""
    return (
        [Answer("7", True)] * 20
        + [Answer("7", i % 4 == 0) for i in range(10)]
        + [Answer("7", False)] * 10
    )


@pytest.fixture(scope="module")
def model() -> RiskModel:
    """Fitted on synthetic learners whose next answers follow their own skill level."""
    rng = random.Random(0)
    rows, labels = [], []
    for _ in range(300):
        p = rng.uniform(0.2, 0.95)
        answers = _learner(rng, 40, p)
        for t, features in cut_points(answers):
            rows.append(features)
            labels.append(int(np.mean([a.correct for a in answers[t : t + 10]]) < 0.5))
    return RiskModel.fit(np.array(rows), np.array(labels))


def test_features_at_a_cut_read_only_the_answers_before_it():
    rng = random.Random(1)
    answers = _learner(rng, 60, 0.6)
    changed = answers[:30] + [Answer(a.skill_id, not a.correct) for a in answers[30:]]
    cuts = dict(cut_points(answers))
    assert sorted(cuts) == [10, 20, 30, 40, 50]
    for t, features in cuts.items():
        alone = AnswerFeatures().extend(answers[:t]).features()
        assert np.allclose(features, alone, rtol=0, atol=1e-12)
    later_changed = dict(cut_points(changed))
    for t in (10, 20, 30):  # the future differs after answer 30, the features up to it do not
        assert np.allclose(cuts[t], later_changed[t], rtol=0, atol=1e-12)
    assert not np.allclose(cuts[40], later_changed[40])


def test_features_count_what_they_say():
    state = AnswerFeatures().extend(_failing())
    values = dict(zip(FEATURES, state.features(), strict=True))
    assert state.window(1, 10) == (0, 10) and state.window(11, 20) == (3, 10)
    assert values["wrong_streak"] == 10  # 11 in a row, capped
    assert values["acc_last5"] == pytest.approx(1 / 7, abs=1e-12)  # (0 + 1) / (5 + 2)
    trend = state.trend("7")
    assert trend.falling_blocks == 2 and trend.history[0] > trend.history[-1]
    assert AnswerFeatures().features().shape == (len(FEATURES),)


def test_a_clearly_failing_learner_is_at_risk_with_reasons(model):
    names = {"7": "'Box and Whisker'"}
    failing = assess(model, _failing(), now=0.0, skill_name=names.get)
    strong = assess(model, [Answer("7", True)] * 40, now=0.0, skill_name=names.get)
    assert failing.risk > 0.5 > strong.risk
    texts = [r.text for r in failing.reasons]
    assert "accuracy 0 of the last 10 (0 of the last 5)" in texts
    assert any(
        t.startswith("mastery of 'Box and Whisker' at 0.19 after 40 attempts, falling for 2 blocks")
        for t in texts
    )
    every = risk_reasons(model, AnswerFeatures().extend(_failing()), threshold=-1e9)
    assert "11 wrong answers in a row" in [r.text for r in every]  # phrased, if not above 0.25
    assert all(r.kind == "risk" and r.weight >= 0.25 for r in failing.reasons)
    assert strong.reasons == []
    assert assess(model, [], now=0.0).risk is None


def test_disengagement_from_pace_emotion_and_idle_days(model):
    steady = [TurnObservation(ts=60.0 * i, emotion_state="engaged") for i in range(20)]
    slowing = [TurnObservation(ts=60.0 * i, emotion_state="neutral") for i in range(10)] + [
        TurnObservation(ts=600 + 300.0 * i, emotion_state="frustrated") for i in range(1, 11)
    ]
    day = 86400.0
    calm = assess(model, [], steady, now=steady[-1].ts + 60)
    worried = assess(model, [], slowing, now=slowing[-1].ts + 10 * day)
    assert calm.disengagement < 0.1 and calm.reasons == []
    assert worried.disengagement > 0.9
    assert [r.text for r in worried.reasons] == [
        "frustrated in 5 of the last 5 turns",
        "pace slowing: median pause up 5.0x",
        "no turn for 10 days",
    ]
    assert assess(model, _failing(), now=0.0).disengagement is None  # no turns, no score


def test_a_multi_skill_problem_is_one_attempt():
    sequence = StudentSequence("s", ["a", "b", "b", "c"], ["1", "2", "3", "1"], [1, 0, 0, 1])
    assert [(a.item_id, a.skill_id, a.correct) for a in attempts(sequence)] == [
        ("a", "1", True),
        ("b", "2", False),
        ("c", "1", True),
    ]


def test_precision_at_counts_ties_at_the_cut_off_at_their_mean():
    scores = np.array([0.9, 0.8, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1])
    labels = np.array([1, 0, 1, 1, 0, 0, 0, 1, 0, 0])
    assert precision_at(scores, labels, 0.2) == pytest.approx(0.5, abs=1e-12)  # 0.9, 0.8
    # top 4: 0.9, 0.8 and two of the four tied 0.5s, which hold 2 positives: (1 + 2 * 0.5) / 4
    assert precision_at(scores, labels, 0.4) == pytest.approx(0.5, abs=1e-12)
    assert precision_at(scores, labels, 0.1) == pytest.approx(1.0, abs=1e-12)
    assert precision_at(scores, labels, 1.0) == pytest.approx(0.4, abs=1e-12)
    with pytest.raises(ValueError):
        precision_at(scores, labels, 0.0)


def test_paired_comparison_over_folds():
    result = paired([0.8, 0.82, 0.81], [0.7, 0.71, 0.72])
    assert result["folds_model_better"] == 3 and result["folds"] == 3
    assert result["mean_difference"] == pytest.approx(0.1, abs=1e-12)
    assert result["p_value"] < 0.01


def test_the_model_round_trips_and_refuses_other_features(model, tmp_path):
    x = AnswerFeatures().extend(_failing()).features()
    loaded = RiskModel.load(model.save(tmp_path).parent)
    assert np.allclose(loaded.predict(x), model.predict(x), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="differ"):
        RiskModel.from_dict({**model.to_dict(), "features": list(FEATURES)[::-1]})


@pytest.mark.skipif(
    not ModelRegistry().versions(REGISTRY_NAME), reason="no difficulty_risk version registered"
)
def test_the_shipped_model_reads_accuracy_as_the_baseline_does():
    registry = ModelRegistry()
    shipped = RiskModel.load(registry.load(REGISTRY_NAME).path)
    coef = dict(zip(FEATURES, shipped.coef, strict=True))
    assert all(coef[f] < 0 for f in ("acc_last5", "acc_prev5", "acc_prev10", "acc_all"))
    failing = assess(shipped, _failing(), now=0.0)
    assert failing.risk > 0.5 and failing.reasons
