"""The report the `tutor` command and the guardrail read, and a candidate's comparison."""

import json

import pytest

from deployments.lifecycle.online_metrics import (
    Comparison,
    ModelReport,
    build_report,
    compare,
    model_report,
)
from deployments.lifecycle.serving_stats import N_BUCKETS, bucket_of
from store import open_store

from .builders import answer, reward, shadow, stats_record, turn


def difficulty_traffic(n: int, *, champion_p: float, candidate_p: float, accuracy: float = 0.7):
    """n learners on v1 and n on v2, one answered turn each; the same share answers right."""
    turns, answers = [], []
    for i in range(2 * n):
        version, p = ("v1", champion_p) if i < n else ("v2", candidate_p)
        correct = (i % n) < accuracy * n
        turns.append(
            turn(
                f"t{i}",
                float(i),
                learner=f"l{i}",
                predictions={"i1": p},
                versions={"difficulty": version},
            )
        )
        answers.append(answer(f"t{i}:feedback", i + 0.5, correct=correct, learner=f"l{i}"))
    return turns, answers


def _histogram(ms: float, count: int) -> list[int]:
    counts = [0] * N_BUCKETS
    counts[bucket_of(ms)] = count
    return counts


def test_every_version_seen_appears_with_its_serving_and_outcomes():
    turns, answers = difficulty_traffic(20, champion_p=0.7, candidate_p=0.7)
    shadows = [
        shadow("t0", "difficulty", "v3", {"predictions": [{"item_id": "i1", "p_correct": 0.5}]})
    ]
    serving = [
        stats_record("v1", 20, 0, _histogram(9, 20)),
        stats_record("v4", 5, 0, _histogram(9, 5)),
    ]
    for record in serving:
        record.model = "difficulty"
    report = build_report(
        "difficulty", turns=turns, answers=answers, shadows=shadows, serving=serving, now=1.0
    )
    assert set(report.versions) == {"v1", "v2", "v3", "v4"}
    v1, v3, v4 = report.versions["v1"], report.versions["v3"], report.versions["v4"]
    assert (v1.serving.requests, v1.served.labels, v1.shadow) == (20, 20, None)
    assert (v3.serving, v3.served, v3.shadow.labels) == (None, None, 1)
    assert v3.outcomes is v3.shadow
    # 9 ms reads as its bucket's upper bound; v4 is loaded but served no labelled turn yet.
    assert (v4.serving.p99_ms, v4.served) == (10, None)
    again = ModelReport.model_validate(json.loads(report.model_dump_json()))
    assert again == report


class _Store:
    """The five reads model_report makes, recording the `since` each was asked for."""

    def __init__(self, turns, answers, rewards):
        self.turns, self.answers, self.rewards, self.asked = turns, answers, rewards, []

    def iter_turns(self, *, since=None):
        self.asked.append(("turns", since))
        return iter([t for t in self.turns if since is None or t.ts >= since])

    def iter_answers(self, *, since=None):
        self.asked.append(("answers", since))
        return iter([a for a in self.answers if since is None or a.ts >= since])

    def iter_rewards(self, *, since=None):
        self.asked.append(("rewards", since))
        return iter([r for r in self.rewards if since is None or r.ts >= since])

    def iter_shadow_outputs(self, model, *, since=None):
        self.asked.append(("shadows", since))
        return iter([])

    def serving_stats(self, model, *, since=None):
        self.asked.append(("serving", since))
        return []


def test_model_report_reads_the_store_from_since_on():
    turns = [turn("a", 1.0, strategy="hint"), turn("b", 5.0)]
    store = _Store(turns, [], [reward("a", 1.0, ts=1.5), reward("b", 0.0, ts=5.5)])
    report = model_report(store, "personalization", since=3.0)
    assert {since for _, since in store.asked} == {3.0} and len(store.asked) == 5
    assert report.versions["v1"].served.rewards == 1 and report.since == 3.0
    with pytest.raises(ValueError, match="unknown model 'emotions'"):
        model_report(store, "emotions", since=None)


def test_a_clearly_worse_candidate_log_loss_is_flagged():
    turns, answers = difficulty_traffic(100, champion_p=0.7, candidate_p=0.3)
    comparison = compare(build_report("difficulty", turns=turns, answers=answers), "v1", "v2")
    log_loss = comparison.delta("log_loss")
    assert log_loss.delta > 0 and log_loss.test == "welch t" and log_loss.p_value < 1e-6
    assert log_loss.worse and comparison.worse and comparison.candidate_source == "served"
    assert (log_loss.n_champion, log_loss.n_candidate) == (100, 100)
    dumped = comparison.model_dump_json()
    assert json.loads(dumped)["worse"] is True
    assert Comparison.model_validate_json(dumped) == comparison


def test_an_equal_candidate_is_not_flagged():
    turns, answers = difficulty_traffic(100, champion_p=0.7, candidate_p=0.7)
    comparison = compare(build_report("difficulty", turns=turns, answers=answers), "v1", "v2")
    assert comparison.delta("log_loss").delta == pytest.approx(0.0)
    assert not comparison.worse


def test_a_shadow_is_compared_label_for_label():
    turns, answers = difficulty_traffic(50, champion_p=0.7, candidate_p=0.7)
    turns = turns[:50]  # only the champion served
    shadows = [
        shadow(
            t.turn_id, "difficulty", "v5", {"predictions": [{"item_id": "i1", "p_correct": 0.65}]}
        )
        for t in turns
    ]
    comparison = compare(
        build_report("difficulty", turns=turns, answers=answers, shadows=shadows), "v1", "v5"
    )
    log_loss = comparison.delta("log_loss")
    assert comparison.candidate_source == "shadow" and log_loss.test == "paired t"
    assert log_loss.n_candidate == 50 and log_loss.p_value is not None


def test_a_policy_with_lower_rewards_is_flagged():
    turns = [
        turn(f"t{i}", float(i), versions={"personalization": "v1" if i < 80 else "v2"})
        for i in range(160)
    ]
    rewards = [
        reward(f"t{i}", 1.0 if (i < 80 and i % 4) or (i >= 80 and i % 4 == 0) else 0.0)
        for i in range(160)
    ]
    comparison = compare(
        build_report("personalization", turns=turns, answers=[], rewards=rewards), "v1", "v2"
    )
    mean_reward = comparison.delta("mean_reward")
    assert mean_reward.champion == 0.75 and mean_reward.candidate == 0.25
    assert mean_reward.worse and mean_reward.higher_is_better
    flipped = compare(
        build_report("personalization", turns=turns, answers=[], rewards=rewards), "v2", "v1"
    )
    assert not flipped.worse


def test_serving_deltas_and_an_emotion_distance():
    serving = [
        stats_record("v3", 1000, 10, _histogram(20, 1000)),
        stats_record("v4", 200, 20, _histogram(90, 200)),
    ]
    turns = [
        turn("a", 1.0, state="confused"),
        turn("b", 2.0, state="bored", versions={"emotion": "v4"}),
    ]
    comparison = compare(
        build_report("emotion", turns=turns, answers=[], serving=serving), "v3", "v4"
    )
    errors = comparison.delta("error_rate")
    assert (errors.champion, errors.candidate) == (0.01, 0.1)
    assert errors.worse and errors.test == "two-proportion z"
    assert (comparison.delta("p99_ms").champion, comparison.delta("p99_ms").candidate) == (20, 100)
    assert comparison.delta("state_tv_distance").candidate == 1.0
    assert not comparison.delta("state_tv_distance").worse  # a distance is not a verdict


def test_a_version_with_no_data_compares_to_nothing():
    comparison = compare(build_report("emotion", turns=[], answers=[]), "v3", "v4")
    assert comparison.deltas == [] and comparison.candidate_source is None and not comparison.worse


def test_model_report_on_a_real_sqlite_store(tmp_path):
    turns, answers = difficulty_traffic(10, champion_p=0.7, candidate_p=0.3)
    with open_store(f"sqlite:///{tmp_path / 'tutor.db'}") as store:
        for record in turns:
            store.save_turn(record)
        for record in answers:
            store.add_answer(record)
        store.add_shadow_output(
            shadow(
                "t12",
                "difficulty",
                "v3",
                {"predictions": [{"item_id": "i1", "p_correct": 0.5}]},
                ts=12.0,
            )
        )
        store.add_serving_stats(stats_record("v2", 4, 1, _histogram(30, 4), model="difficulty"))
        report = model_report(store, "difficulty", since=10.0)  # only v2's turns t10..t19
    assert set(report.versions) == {"v2", "v3"}
    assert report.versions["v2"].served.labels == 10
    assert report.versions["v2"].serving.errors == 1
    assert report.versions["v3"].shadow.labels == 1
