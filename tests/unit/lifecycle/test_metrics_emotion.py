"""Emotion versions judged on their state distribution and on the answers that followed."""

import pytest

from deployments.lifecycle import metrics_emotion
from deployments.lifecycle.online_metrics import build_report
from deployments.lifecycle.outcomes import join

from .builders import answer, shadow, turn

V4 = {"emotion": "v4"}


def _records():
    turns = [
        turn("a", 1.0, state="confused"),
        turn("b", 2.0, state="confused"),
        turn("c", 3.0, state="confident"),
        turn("d", 4.0, state="confident"),
        turn("e", 5.0, state="confident", versions=V4, learner="l2"),
        turn("f", 6.0, state="confident", versions=V4, learner="l2"),
        turn("g", 7.0, state="neutral", versions={"emotion": "unavailable"}),  # a fallback
    ]
    answers = [
        answer("a:feedback", 1.5, correct=False),
        answer("c:answer", 3.0, correct=True),  # follows b
        answer("c:feedback", 3.5, correct=True),
        answer("e:feedback", 5.5, correct=True, learner="l2"),
    ]
    shadows = [
        shadow("a", "emotion", "v5", {"state": "confused"}, served_version="v3"),
        shadow("b", "emotion", "v5", {"state": "bored"}, served_version="v3"),
        shadow("e", "emotion", "v5", {"state": "confident"}, served_version="v4", learner="l2"),
    ]
    return turns, answers, shadows


def test_state_distribution_and_correct_answers_after_each_state():
    turns, answers, _ = _records()
    report = metrics_emotion.served(join(turns, answers, []))
    assert set(report) == {"v3", "v4"}  # the fallback turn belongs to no version
    v3 = report["v3"]
    assert (v3.turns, v3.answers) == (4, 3)
    assert {s: p.share for s, p in v3.states.items()} == {"confident": 0.5, "confused": 0.5}
    assert {s: (p.successes, p.n) for s, p in v3.correct_after.items()} == {
        "confused": (1, 2),
        "confident": (1, 1),
    }
    confused = v3.correct_after["confused"]
    assert confused.ci_low < 0.5 < confused.ci_high


def test_a_shadow_agrees_with_the_served_state_on_the_same_turns():
    turns, answers, shadows = _records()
    v5 = metrics_emotion.shadow(join(turns, answers, [], shadows))["v5"]
    assert v5.turns == 3
    assert {v: (p.successes, p.n) for v, p in v5.agreement.items()} == {"v3": (1, 2), "v4": (1, 1)}
    # Its states are scored on the answers that followed the same turns.
    assert {s: (p.successes, p.n) for s, p in v5.correct_after.items()} == {
        "confused": (0, 1),
        "bored": (1, 1),
        "confident": (1, 1),
    }


def test_total_variation_to_the_champion_in_the_report():
    turns, answers, shadows = _records()
    report = build_report(
        "emotion", turns=turns, answers=answers, shadows=shadows, champion="v3", now=0.0
    )
    assert report.versions["v3"].served.tv_to_champion is None
    # v4 says "confident" always, v3 half the time.
    assert report.versions["v4"].served.tv_to_champion.value == pytest.approx(0.5)
    # v5 (a shadow): confused 1/3, bored 1/3, confident 1/3 against v3's halves.
    assert report.versions["v5"].shadow.tv_to_champion.value == pytest.approx(1 / 3)
