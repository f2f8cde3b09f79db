"""The behaviour every TutorStore backend must share (run once per backend via `store`)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from store import (
    AnswerRecord,
    ArmStats,
    FeedbackRecord,
    LearnerRecord,
    RewardRecord,
    TurnRecord,
    TutorStore,
)


def make_turn(turn_id: str, learner_id: str = "L1", ts: float = 100.0, **overrides: Any):
    fields: dict[str, Any] = {
        "turn_id": turn_id,
        "learner_id": learner_id,
        "session_id": "S1",
        "ts": ts,
        "request_id": f"req-{turn_id}",
        "message": "what is 3/4 + 1/8?",
        "reply": "Let's find a common denominator.",
        "emotion": {"label": "confused", "scores": {"confused": 0.7, "neutral": 0.3}},
        "difficulty": {"level": 2, "probability": 0.61},
        "strategy": "hint",
        "propensity": 0.25,
        "context": [1.0, 0.5, -0.25],
        "provider": "local",
        "model": "tiny",
        "model_versions": {"emotion": "v1", "difficulty": "v2"},
        "timings_ms": {"emotion": 3.5, "total": 41.25},
        "degraded": [],
    }
    fields.update(overrides)
    return TurnRecord(**fields)


def make_answer(source_id: str, ts: float, learner_id: str = "L1", **overrides: Any):
    fields: dict[str, Any] = {
        "learner_id": learner_id,
        "source_id": source_id,
        "item_id": f"item-{source_id}",
        "skill_id": "fractions",
        "correct": True,
        "ts": ts,
    }
    fields.update(overrides)
    return AnswerRecord(**fields)


def test_ping(store: TutorStore) -> None:
    store.ping()


# ---- learners ---------------------------------------------------------------------------------


def test_get_missing_learner_is_none(store: TutorStore) -> None:
    assert store.get_learner("nobody") is None


def test_get_or_create_learner_creates_once(store: TutorStore) -> None:
    learner, created = store.get_or_create_learner("L1", now=10.0)
    assert created is True
    assert learner == LearnerRecord(learner_id="L1", created_at=10.0, turn_count=0)

    # A second (possibly racing) caller succeeds, is told it did not create, and sees the first
    # caller's record: its own `now` is ignored.
    again, created_again = store.get_or_create_learner("L1", now=99.0)
    assert created_again is False
    assert again == learner
    assert store.get_learner("L1") == learner


# ---- answers ----------------------------------------------------------------------------------


def test_answers_chronological_with_ties_in_insertion_order(store: TutorStore) -> None:
    for source_id, ts in [("c", 3.0), ("a", 1.0), ("t1", 2.0), ("t2", 2.0), ("t3", 2.0)]:
        assert store.add_answer(make_answer(source_id, ts)) is True
    assert [a.source_id for a in store.answers("L1")] == ["a", "t1", "t2", "t3", "c"]


def test_answers_limit_keeps_newest(store: TutorStore) -> None:
    for i in range(10):
        store.add_answer(make_answer(f"s{i}", float(i)))
    assert [a.source_id for a in store.answers("L1", limit=3)] == ["s7", "s8", "s9"]
    assert store.answers("L1", limit=0) == []
    assert len(store.answers("L1", limit=100)) == 10


def test_answer_rows_are_the_answers_as_the_difficulty_model_reads_them(store: TutorStore) -> None:
    """The turn's fast path reads rows, the API's records: the same answers, order and limit."""
    for i, ts in enumerate([3.0, 1.0, 2.0, 2.0, 5.0, 4.0]):
        store.add_answer(make_answer(f"s{i}", ts, correct=i % 2 == 0, item_id=f"i{i}"))
    store.add_answer(make_answer("other", 1.5, learner_id="L2"))
    for limit in (0, 1, 4, 1000):
        rows = store.answer_rows("L1", limit=limit)
        records = store.answers("L1", limit=limit)
        assert rows == [(a.item_id, a.skill_id, a.correct) for a in records]
        assert all(type(correct) is bool for _, _, correct in rows)
    assert [item for item, _, _ in store.answer_rows("L1")] == ["i1", "i2", "i3", "i0", "i5", "i4"]
    assert store.answer_rows("L3") == []


def test_answer_count_counts_every_answer_of_the_learner_once(store: TutorStore) -> None:
    """A turn reads the newest answers and this count: where in the learner's history they
    start (``deployments.tutoring.history.history_window``)."""
    assert store.answer_count("L1") == 0
    for i in range(5):
        store.add_answer(make_answer(f"s{i}", float(i)))
    store.add_answer(make_answer("s0", 9.0))  # the same source again: not a new answer
    store.add_answer(make_answer("s0", 1.0, learner_id="L2"))
    assert store.answer_count("L1") == 5
    assert store.answer_count("L2") == 1


def test_answers_are_per_learner(store: TutorStore) -> None:
    store.add_answer(make_answer("s", 1.0, learner_id="L1"))
    # The idempotency key is scoped to the learner: the same source_id elsewhere is new.
    assert store.add_answer(make_answer("s", 2.0, learner_id="L2")) is True
    assert [a.ts for a in store.answers("L1")] == [1.0]
    assert [a.ts for a in store.answers("L2")] == [2.0]
    assert store.answers("L3") == []


def test_add_answer_is_idempotent(store: TutorStore) -> None:
    first = make_answer("turn-1:answer", 5.0, correct=True)
    assert store.add_answer(first) is True
    retry = make_answer("turn-1:answer", 6.0, correct=False, item_id="other")
    assert store.add_answer(retry) is False
    assert store.answers("L1") == [first]


# ---- turns ------------------------------------------------------------------------------------


def test_save_turn_is_idempotent_and_counts_once(store: TutorStore) -> None:
    store.get_or_create_learner("L1", now=1.0)
    turn = make_turn("T1", ts=50.0)
    assert store.save_turn(turn) is True
    assert store.save_turn(make_turn("T1", ts=60.0, reply="a different reply")) is False
    assert store.get_turn("T1") == turn

    learner = store.get_learner("L1")
    assert learner == LearnerRecord(
        learner_id="L1", created_at=1.0, turn_count=1, last_turn_at=50.0
    )

    assert store.save_turn(make_turn("T2", ts=70.0)) is True
    learner = store.get_learner("L1")
    assert learner is not None
    assert (learner.turn_count, learner.last_turn_at) == (2, 70.0)


def test_save_turn_creates_missing_learner(store: TutorStore) -> None:
    assert store.save_turn(make_turn("T1", learner_id="new", ts=42.0)) is True
    assert store.get_learner("new") == LearnerRecord(
        learner_id="new", created_at=42.0, turn_count=1, last_turn_at=42.0
    )
    # The learner now exists, so get_or_create reports it as found.
    assert store.get_or_create_learner("new", now=99.0)[1] is False


def test_last_turn_at_never_moves_back(store: TutorStore) -> None:
    store.save_turn(make_turn("T2", ts=20.0))
    store.save_turn(make_turn("T1", ts=10.0))  # a late, older turn
    learner = store.get_learner("L1")
    assert learner is not None
    assert (learner.turn_count, learner.last_turn_at) == (2, 20.0)


def test_get_missing_turn_is_none(store: TutorStore) -> None:
    assert store.get_turn("nope") is None


def test_recent_turns_order_limit_and_isolation(store: TutorStore) -> None:
    for turn_id, ts in [("t3", 3.0), ("t1", 1.0), ("t2a", 2.0), ("t2b", 2.0), ("t4", 4.0)]:
        store.save_turn(make_turn(turn_id, ts=ts))
    store.save_turn(make_turn("other", learner_id="L2", ts=2.5))
    assert [t.turn_id for t in store.recent_turns("L1")] == ["t1", "t2a", "t2b", "t3", "t4"]
    assert [t.turn_id for t in store.recent_turns("L1", limit=2)] == ["t3", "t4"]
    assert [t.turn_id for t in store.recent_turns("L1", limit=3)] == ["t2b", "t3", "t4"]
    assert store.recent_turns("L1", limit=0) == []
    assert [t.turn_id for t in store.recent_turns("L2")] == ["other"]
    assert store.recent_turns("L3") == []


def test_turn_round_trips_every_field(store: TutorStore) -> None:
    turn = make_turn(
        "T-ü",
        learner_id="learner-ß",
        session_id=None,
        ts=1_700_000_000.123456,
        message="¿Qué es 0.1 + 0.2? 🤔",
        reply='He said "no"\nnew line',
        emotion={"label": "joy", "scores": [0.1, 0.2], "nested": {"deep": None, "flag": True}},
        difficulty={"level": 3, "probability": 1 / 3},
        propensity=0.1 + 0.2,
        context=[0.1, -1e-300, 1e300, 0.0],
        model_versions={"emotion": "abc123", "bandit": "2024-01-01"},
        timings_ms={"total": 12.345678901234567},
        degraded=["emotion", "difficulty"],
    )
    assert store.save_turn(turn) is True
    stored = store.get_turn("T-ü")
    assert stored == turn
    assert stored is not None and stored.model_dump() == turn.model_dump()
    assert store.recent_turns("learner-ß") == [turn]


# ---- feedback ---------------------------------------------------------------------------------


def test_feedback_is_idempotent(store: TutorStore) -> None:
    first = FeedbackRecord(turn_id="T1", learner_id="L1", reward=1.0, ts=5.0)
    assert store.add_feedback(first) is True
    second = FeedbackRecord(turn_id="T1", learner_id="L1", reward=0.0, correct=False, ts=6.0)
    assert store.add_feedback(second) is False
    assert store.get_feedback("T1") == first
    assert store.get_feedback("T2") is None


def test_feedback_round_trips_every_field(store: TutorStore) -> None:
    full = FeedbackRecord(
        turn_id="T1",
        learner_id="L1",
        reward=0.1 + 0.2,
        item_id="item-7",
        skill_id="fractions",
        correct=False,
        ts=12.5,
    )
    bare = FeedbackRecord(turn_id="T2", learner_id="L1", reward=None, ts=13.0)
    store.add_feedback(full)
    store.add_feedback(bare)
    assert store.get_feedback("T1") == full
    assert store.get_feedback("T2") == bare


# ---- bandit -----------------------------------------------------------------------------------


def test_bandit_stats_are_additive(store: TutorStore) -> None:
    assert store.bandit_stats("p") == {}
    store.add_arm_observation("p", "hint", x=[1.0, 2.0], reward=1.0)
    store.add_arm_observation("p", "hint", x=[3.0, -1.0], reward=0.5)
    store.add_arm_observation("p", "explain", x=[0.0, 1.0], reward=0.0)
    store.add_arm_observation("other-policy", "hint", x=[1.0, 1.0, 1.0], reward=1.0)

    stats = store.bandit_stats("p")
    assert set(stats) == {"hint", "explain"}
    # outer([1,2]) = [1,2,2,4]; outer([3,-1]) = [9,-3,-3,1]
    assert stats["hint"] == ArmStats(
        arm="hint", n=2, reward_sum=1.5, a=[10.0, -1.0, -1.0, 5.0], b=[2.5, 1.5]
    )
    assert stats["explain"] == ArmStats(
        arm="explain", n=1, reward_sum=0.0, a=[0.0, 0.0, 0.0, 1.0], b=[0.0, 0.0]
    )
    assert store.bandit_stats("other-policy")["hint"].dim == 3


def test_bandit_dimension_mismatch_raises_and_changes_nothing(store: TutorStore) -> None:
    store.add_arm_observation("p", "hint", x=[1.0, 2.0], reward=1.0)
    before = store.bandit_stats("p")
    with pytest.raises(ValueError, match="dimension"):
        store.add_arm_observation("p", "hint", x=[1.0, 2.0, 3.0], reward=1.0)
    assert store.bandit_stats("p") == before
    # Another arm may have its own dimension.
    store.add_arm_observation("p", "explain", x=[1.0, 2.0, 3.0], reward=1.0)


@pytest.mark.parametrize(
    ("x", "reward"),
    [([], 1.0), ([1.0, math.nan], 1.0), ([1.0], math.inf), ([math.inf], 0.0)],
)
def test_bandit_rejects_bad_observations(store: TutorStore, x: list[float], reward: float) -> None:
    with pytest.raises(ValueError):
        store.add_arm_observation("p", "hint", x=x, reward=reward)
    assert store.bandit_stats("p") == {}


# ---- rewards ----------------------------------------------------------------------------------


def make_reward(turn_id: str, source: str = "answer", learner_id: str = "L1", **overrides: Any):
    fields: dict[str, Any] = {
        "turn_id": turn_id,
        "learner_id": learner_id,
        "source": source,
        "policy": "p",
        "strategy": "hint",
        "reward": 1.0,
        "ts": 100.0,
    }
    fields.update(overrides)
    return RewardRecord(**fields)


def test_reward_is_once_per_turn_and_source_and_feeds_the_bandit(store: TutorStore) -> None:
    assert store.add_reward(make_reward("T1"), context=[1.0, 2.0]) is True
    # A retry (even with another value) changes nothing: the bandit counts it once.
    assert store.add_reward(make_reward("T1", reward=0.0), context=[1.0, 2.0]) is False
    assert store.add_reward(make_reward("T1", "explicit", reward=0.5), context=[1.0, 2.0]) is True
    assert store.bandit_stats("p")["hint"] == ArmStats(
        arm="hint", n=2, reward_sum=1.5, a=[2.0, 4.0, 4.0, 8.0], b=[1.5, 3.0]
    )
    assert [(r.source, r.reward) for r in store.learner_rewards("L1")] == [
        ("answer", 1.0),
        ("explicit", 0.5),
    ]


def test_reward_without_context_is_kept_but_teaches_no_bandit(store: TutorStore) -> None:
    assert store.add_reward(make_reward("T1"), context=None) is True
    assert store.bandit_stats("p") == {}
    assert store.learner_rewards("L1") == [make_reward("T1")]


def test_reward_refused_for_a_wrong_dimension_is_not_recorded(store: TutorStore) -> None:
    store.add_arm_observation("p", "hint", x=[1.0, 2.0], reward=1.0)
    with pytest.raises(ValueError, match="dimension"):
        store.add_reward(make_reward("T1"), context=[1.0, 2.0, 3.0])
    assert store.learner_rewards("L1") == []
    assert store.add_reward(make_reward("T1"), context=[1.0, 0.0]) is True


def test_learner_rewards_order_limit_and_isolation(store: TutorStore) -> None:
    for i, ts in enumerate([30.0, 10.0, 20.0]):
        store.add_reward(make_reward(f"T{i}", ts=ts), context=None)
    store.add_reward(make_reward("X", learner_id="L2"), context=None)
    assert [r.ts for r in store.learner_rewards("L1")] == [10.0, 20.0, 30.0]
    assert [r.ts for r in store.learner_rewards("L1", limit=2)] == [20.0, 30.0]
    assert store.learner_rewards("L1", limit=0) == []


# ---- export -----------------------------------------------------------------------------------


def test_iter_turns_and_rewards_read_everything_across_batches(store: TutorStore) -> None:
    turns = [make_turn(f"T{i}", learner_id=f"L{i % 3}", ts=100.0 + i) for i in range(7)]
    for turn in turns:
        store.save_turn(turn)
        store.add_reward(make_reward(turn.turn_id, learner_id=turn.learner_id), context=None)
    assert list(store.iter_turns(batch_size=3)) == turns
    assert sorted(r.turn_id for r in store.iter_rewards(batch_size=2)) == sorted(
        t.turn_id for t in turns
    )
