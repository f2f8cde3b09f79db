"""The model lifecycle's store contract (run once per backend via `store`): rollout history,
shadow outputs, serving counts, and reads by time across learners."""

from __future__ import annotations

from typing import Any

import pytest

from store import (
    RolloutEventRecord,
    ServingStatsRecord,
    ShadowOutputRecord,
    TutorStore,
)
from tests.store.test_contract import make_answer, make_reward, make_turn


def make_event(event_id: str, ts: float, model: str = "difficulty", **overrides: Any):
    fields: dict[str, Any] = {
        "event_id": event_id,
        "model": model,
        "action": "canary",
        "from_version": "v1",
        "to_version": "v2",
        "percent": 10.0,
        "reason": "new candidate",
        "actor": "cli:ana",
        "ts": ts,
    }
    fields.update(overrides)
    return RolloutEventRecord(**fields)


def make_shadow(turn_id: str, ts: float, model: str = "emotion", **overrides: Any):
    fields: dict[str, Any] = {
        "turn_id": turn_id,
        "learner_id": "L1",
        "model": model,
        "version": "v2",
        "served_version": "v1",
        "output": {"state": "confused", "states": {"confused": 0.7, "engaged": 0.3}},
        "ts": ts,
    }
    fields.update(overrides)
    return ShadowOutputRecord(**fields)


def make_stats(window_end: float, model: str = "emotion", **overrides: Any):
    fields: dict[str, Any] = {
        "model": model,
        "version": "v1",
        "replica": "r1",
        "window_start": window_end - 10.0,
        "window_end": window_end,
        "requests": 20,
        "errors": 1,
        "latency_counts": [5, 10, 4, 1, 0],
    }
    fields.update(overrides)
    return ServingStatsRecord(**fields)


# ---- rollout history --------------------------------------------------------------------------


def test_rollout_event_round_trips_every_field(store: TutorStore) -> None:
    full = make_event("e1", 1_700_000_000.25, reason='p99 ×2 "slow"\nsee logs', percent=0.1 + 0.2)
    bare = make_event(
        "e2",
        1_700_000_001.0,
        action="promote",
        from_version=None,
        to_version=None,
        percent=None,
        reason="",
        actor="guardrail",
    )
    assert store.add_rollout_event(full) is True
    assert store.add_rollout_event(bare) is True
    assert store.rollout_events() == [full, bare]


def test_rollout_event_is_idempotent_on_event_id(store: TutorStore) -> None:
    first = make_event("rollback:difficulty:v2:100", 5.0, action="rollback", actor="guardrail")
    assert store.add_rollout_event(first) is True
    # A second replica's guardrail (or a retry) with other details changes nothing.
    again = make_event("rollback:difficulty:v2:100", 6.0, action="rollback", reason="later")
    assert store.add_rollout_event(again) is False
    assert store.rollout_events() == [first]


def test_rollout_events_order_filter_and_limit(store: TutorStore) -> None:
    inserted = [
        ("c", 3.0, "difficulty"),
        ("a", 1.0, "difficulty"),
        ("t1", 2.0, "difficulty"),
        ("t2", 2.0, "difficulty"),
        ("x", 2.5, "emotion"),
    ]
    for event_id, ts, model in inserted:
        store.add_rollout_event(make_event(event_id, ts, model=model))
    # Oldest first, ties on ts in insertion order.
    assert [e.event_id for e in store.rollout_events()] == ["a", "t1", "t2", "x", "c"]
    assert [e.event_id for e in store.rollout_events("difficulty")] == ["a", "t1", "t2", "c"]
    # The limit keeps the newest.
    assert [e.event_id for e in store.rollout_events("difficulty", limit=2)] == ["t2", "c"]
    assert [e.event_id for e in store.rollout_events(limit=3)] == ["t2", "x", "c"]
    assert store.rollout_events(limit=0) == []
    assert store.rollout_events("personalization") == []


# ---- shadow outputs ---------------------------------------------------------------------------


def test_shadow_output_round_trips_every_field(store: TutorStore) -> None:
    difficulty = make_shadow(
        "T-ü",
        1_700_000_000.5,
        model="difficulty",
        learner_id="learner-ß",
        output={
            "predictions": [
                {"item_id": "i1", "skill_id": "fractions", "p_correct": 1 / 3},
                {"item_id": "i2", "skill_id": "decimals", "p_correct": 0.1 + 0.2},
            ],
            "recommended_item_id": None,
        },
    )
    personalization = make_shadow(
        "T-ü",
        1_700_000_000.5,
        model="personalization",
        output={"strategy": "hint", "propensity": 0.25},
    )
    assert store.add_shadow_output(difficulty) is True
    assert store.add_shadow_output(personalization) is True
    assert list(store.iter_shadow_outputs("difficulty")) == [difficulty]
    assert list(store.iter_shadow_outputs("personalization")) == [personalization]


def test_shadow_output_is_once_per_turn_model_and_version(store: TutorStore) -> None:
    first = make_shadow("T1", 5.0)
    assert store.add_shadow_output(first) is True
    assert store.add_shadow_output(make_shadow("T1", 6.0, output={"state": "bored"})) is False
    # Another version, or another model, on the same turn is a different output.
    assert store.add_shadow_output(make_shadow("T1", 5.0, version="v3")) is True
    assert store.add_shadow_output(make_shadow("T1", 5.0, model="difficulty")) is True
    assert [(s.version, s.output) for s in store.iter_shadow_outputs("emotion")] == [
        ("v2", first.output),
        ("v3", first.output),
    ]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 500])
def test_iter_shadow_outputs_order_since_and_model(store: TutorStore, batch_size: int) -> None:
    for turn_id, ts in [("c", 3.0), ("a", 1.0), ("t1", 2.0), ("t2", 2.0), ("t3", 2.0)]:
        store.add_shadow_output(make_shadow(turn_id, ts))
    store.add_shadow_output(make_shadow("other", 2.0, model="difficulty"))

    def ids(since: float | None) -> list[str]:
        outputs = store.iter_shadow_outputs("emotion", since=since, batch_size=batch_size)
        return [s.turn_id for s in outputs]

    assert ids(None) == ["a", "t1", "t2", "t3", "c"]
    assert ids(2.0) == ["t1", "t2", "t3", "c"]  # since is inclusive
    assert ids(2.5) == ["c"]
    assert ids(3.5) == []
    assert list(store.iter_shadow_outputs("personalization")) == []


# ---- serving counts ---------------------------------------------------------------------------


def test_serving_stats_round_trip_and_append(store: TutorStore) -> None:
    window = make_stats(1_700_000_010.5, latency_counts=[0] * 12 + [3])
    store.add_serving_stats(window)
    # Windows are appended, not deduplicated: two replicas may report identical counts.
    store.add_serving_stats(window)
    assert store.serving_stats("emotion") == [window, window]


def test_serving_stats_since_order_and_model(store: TutorStore) -> None:
    for end, replica in [(30.0, "r1"), (10.0, "r1"), (20.0, "r1"), (20.0, "r2")]:
        store.add_serving_stats(make_stats(end, replica=replica))
    store.add_serving_stats(make_stats(25.0, model="difficulty"))
    by_window = [(s.window_end, s.replica) for s in store.serving_stats("emotion")]
    assert by_window == [(10.0, "r1"), (20.0, "r1"), (20.0, "r2"), (30.0, "r1")]
    # since bounds window_end, inclusive: a window that ends at `since` still counts.
    since_20 = [(s.window_end, s.replica) for s in store.serving_stats("emotion", since=20.0)]
    assert since_20 == [(20.0, "r1"), (20.0, "r2"), (30.0, "r1")]
    assert store.serving_stats("emotion", since=31.0) == []
    assert [s.window_end for s in store.serving_stats("difficulty")] == [25.0]
    assert store.serving_stats("personalization") == []


# ---- reads by time ----------------------------------------------------------------------------

# Out of ts order on purpose (a late turn from a slow replica), with a run of ties.
_TIMES = [("c", 3.0), ("a", 1.0), ("t1", 2.0), ("t2", 2.0), ("t3", 2.0), ("d", 4.0)]
_ORDERED = ["a", "t1", "t2", "t3", "c", "d"]


@pytest.mark.parametrize("batch_size", [1, 2, 4, 500])
def test_iter_turns_since_and_order(store: TutorStore, batch_size: int) -> None:
    for i, (turn_id, ts) in enumerate(_TIMES):
        store.save_turn(make_turn(turn_id, learner_id=f"L{i % 2}", ts=ts))
    turn_ids = [t.turn_id for t in store.iter_turns(batch_size=batch_size)]
    assert turn_ids == _ORDERED
    since = [t.turn_id for t in store.iter_turns(since=2.0, batch_size=batch_size)]
    assert since == _ORDERED[1:]
    assert [t.turn_id for t in store.iter_turns(since=3.5, batch_size=batch_size)] == ["d"]
    assert list(store.iter_turns(since=9.0, batch_size=batch_size)) == []


@pytest.mark.parametrize("batch_size", [1, 2, 4, 500])
def test_iter_rewards_since_and_order(store: TutorStore, batch_size: int) -> None:
    for i, (turn_id, ts) in enumerate(_TIMES):
        store.add_reward(make_reward(turn_id, learner_id=f"L{i % 2}", ts=ts), context=None)
    assert [r.turn_id for r in store.iter_rewards(batch_size=batch_size)] == _ORDERED
    since = [r.turn_id for r in store.iter_rewards(since=2.0, batch_size=batch_size)]
    assert since == _ORDERED[1:]
    assert list(store.iter_rewards(since=9.0, batch_size=batch_size)) == []


@pytest.mark.parametrize("batch_size", [1, 2, 4, 500])
def test_iter_answers_since_and_order(store: TutorStore, batch_size: int) -> None:
    answers = {}
    for i, (source_id, ts) in enumerate(_TIMES):
        answers[source_id] = make_answer(source_id, ts, learner_id=f"L{i % 2}", correct=bool(i % 2))
        store.add_answer(answers[source_id])
    assert list(store.iter_answers(batch_size=batch_size)) == [answers[s] for s in _ORDERED]
    since = [a.source_id for a in store.iter_answers(since=2.0, batch_size=batch_size)]
    assert since == _ORDERED[1:]
    assert list(store.iter_answers(since=9.0, batch_size=batch_size)) == []


def test_reads_by_time_refuse_an_empty_batch(store: TutorStore) -> None:
    for read in (store.iter_turns, store.iter_rewards, store.iter_answers):
        with pytest.raises(ValueError, match="batch_size"):
            list(read(batch_size=0))
    with pytest.raises(ValueError, match="batch_size"):
        list(store.iter_shadow_outputs("emotion", batch_size=0))


def test_shadow_outputs_in_one_write_skip_those_already_stored(store: TutorStore) -> None:
    assert store.add_shadow_outputs([]) == 0
    assert store.add_shadow_output(make_shadow("T1", 5.0)) is True
    batch = [make_shadow("T1", 5.0), make_shadow("T2", 6.0), make_shadow("T3", 7.0)]
    assert store.add_shadow_outputs(batch) == 2
    assert [s.turn_id for s in store.iter_shadow_outputs("emotion")] == ["T1", "T2", "T3"]
