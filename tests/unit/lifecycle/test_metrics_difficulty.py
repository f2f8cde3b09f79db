"""Difficulty versions scored on the answers to the items they predicted."""

import math

import pytest

from deployments.lifecycle import metrics_difficulty
from deployments.lifecycle.outcomes import join

from .builders import answer, shadow, turn

V2 = {"difficulty": "v2"}


def _turns_and_answers():
    # Served by v1: p = 0.8 right, 0.8 wrong, 0.4 wrong. Served by v2: 0.9 right, 0.2 wrong.
    turns = [
        turn("a", 1.0, predictions={"i1": 0.8, "i2": 0.1}),
        turn("b", 2.0, predictions={"i1": 0.8}),
        turn("c", 3.0, predictions={"i1": 0.4}),
        turn("d", 4.0, predictions={"i1": 0.9}, versions=V2, learner="l2"),
        turn("e", 5.0, predictions={"i1": 0.2}, versions=V2, learner="l2"),
        turn("f", 6.0, predictions={}),  # no candidates: no prediction to score
    ]
    answers = [
        answer("a:feedback", 1.5, correct=True),
        answer("c:answer", 3.0, correct=False),  # answers b
        answer("c:feedback", 3.5, correct=False),
        answer("d:feedback", 4.5, correct=True, learner="l2"),
        answer("e:feedback", 5.5, correct=False, learner="l2"),
        answer("f:feedback", 6.5, item="i9"),  # an item the turn did not predict
    ]
    return turns, answers


def test_log_loss_auc_and_calibration_of_each_served_version():
    turns, answers = _turns_and_answers()
    report = metrics_difficulty.served(join(turns, answers, []))
    v1 = report["v1"]
    expected = (-math.log(0.8) - math.log(0.2) - math.log(0.6)) / 3
    assert (v1.turns, v1.labels) == (3, 3)
    assert v1.log_loss.mean == pytest.approx(expected)  # 0.7811
    assert v1.log_loss.ci_low < expected < v1.log_loss.ci_high
    # Positive 0.8 against negatives 0.8 (a tie: half) and 0.4: (0.5 + 1) / 2.
    assert v1.auc.value == pytest.approx(0.75)
    assert v1.accuracy.share == pytest.approx(1 / 3)
    assert v1.mean_p.mean == pytest.approx(2.0 / 3)
    # Bins [0.4, 0.5) and [0.8, 0.9): |0.4 - 0| * 1/3 + |0.8 - 0.5| * 2/3.
    assert v1.ece.value == pytest.approx(0.4 / 3 + 0.3 * 2 / 3)
    assert [(b.low, b.accuracy.n) for b in v1.calibration] == [(0.4, 1), (0.8, 2)]
    v2 = report["v2"]
    assert v2.log_loss.mean == pytest.approx((-math.log(0.9) - math.log(0.8)) / 2)
    assert v2.auc.value == 1.0


def test_a_prediction_of_certainty_that_fails_costs_a_bounded_loss():
    report = metrics_difficulty.served(
        join(
            [turn("a", 1.0, predictions={"i1": 1.0})],
            [answer("a:feedback", 2.0, correct=False)],
            [],
        )
    )
    assert report["v1"].log_loss.mean == pytest.approx(-math.log(1e-6))


def test_a_shadow_is_scored_on_the_same_answers_and_paired_with_the_served_version():
    turns, answers = _turns_and_answers()
    shadows = [
        shadow("a", "difficulty", "v9", {"predictions": [{"item_id": "i1", "p_correct": 0.6}]}),
        shadow("b", "difficulty", "v9", {"predictions": [{"item_id": "i1", "p_correct": 0.3}]}),
        shadow("c", "difficulty", "v9", {"predictions": [{"item_id": "i7", "p_correct": 0.5}]}),
        shadow(
            "d",
            "difficulty",
            "v9",
            {"predictions": [{"item_id": "i1", "p_correct": 0.9}]},
            served_version="v2",
            learner="l2",
        ),
    ]
    report = metrics_difficulty.shadow(join(turns, answers, [], shadows))
    v9 = report["v9"]
    assert (v9.turns, v9.labels) == (4, 3)  # c's shadow did not predict the answered item
    assert v9.log_loss.mean == pytest.approx((-math.log(0.6) - math.log(0.7) - math.log(0.9)) / 3)
    paired = v9.vs_served["v1"]
    assert paired.n == 2
    assert paired.mean == pytest.approx(
        ((-math.log(0.6) + math.log(0.8)) + (-math.log(0.7) + math.log(0.2))) / 2
    )
    assert v9.vs_served["v2"].mean == pytest.approx(0.0)
    # The served versions' own metrics are untouched by the shadow.
    assert metrics_difficulty.served(join(turns, answers, [], shadows))["v1"].labels == 3
