"""The reads an export needs (run once per backend via `store`): every table by time with an
`until` bound, feedback by time, rows per UTC day, and the policies that have statistics."""

from __future__ import annotations

import pytest

from store import FeedbackRecord, TutorStore
from store.base import EXPORT_TABLES, day_label, label_day, utc_day
from tests.store.test_contract import make_answer, make_reward, make_turn

DAY = 86400.0
# Out of ts order on purpose (a late row replayed from an outbox), with a run of ties.
_TIMES = [("c", 3.0), ("a", 1.0), ("t1", 2.0), ("t2", 2.0), ("t3", 2.0), ("d", 4.0)]
_ORDERED = ["a", "t1", "t2", "t3", "c", "d"]


def _fill(store: TutorStore, times: list[tuple[str, float]]) -> None:
    """One row of every table per (key, ts)."""
    for i, (key, ts) in enumerate(times):
        learner = f"L{i % 2}"
        store.save_turn(make_turn(key, learner_id=learner, ts=ts))
        store.add_answer(make_answer(key, ts, learner_id=learner))
        store.add_reward(make_reward(key, learner_id=learner, ts=ts), context=None)
        store.add_feedback(FeedbackRecord(turn_id=key, learner_id=learner, reward=0.5, ts=ts))


def _keys(store: TutorStore, table: str, **bounds: float | int) -> list[str]:
    if table == "answers":
        return [a.source_id for a in store.iter_answers(**bounds)]
    read = {"turns": store.iter_turns, "rewards": store.iter_rewards}.get(table)
    return [row.turn_id for row in (read or store.iter_feedback)(**bounds)]


@pytest.mark.parametrize("batch_size", [1, 2, 500])
@pytest.mark.parametrize("table", EXPORT_TABLES)
def test_reads_by_time_take_since_and_until(store: TutorStore, table: str, batch_size: int):
    _fill(store, _TIMES)
    assert _keys(store, table, batch_size=batch_size) == _ORDERED
    # since inclusive, until exclusive, on every page (a page boundary inside the run of ties).
    assert _keys(store, table, since=2.0, until=3.0, batch_size=batch_size) == ["t1", "t2", "t3"]
    assert _keys(store, table, until=3.0, batch_size=batch_size) == ["a", "t1", "t2", "t3"]
    assert _keys(store, table, since=3.0, until=3.0, batch_size=batch_size) == []


def test_feedback_reads_back_as_written(store: TutorStore) -> None:
    answer = FeedbackRecord(
        turn_id="T2", learner_id="L", item_id="i", skill_id="s", correct=False, ts=5.0
    )
    reward = FeedbackRecord(turn_id="T1", learner_id="L", reward=0.25, ts=4.0)
    store.add_feedback(answer)
    store.add_feedback(reward)
    assert list(store.iter_feedback()) == [reward, answer]
    assert store.get_feedback("T2") == answer  # the backend's own keys stay out of the record


def test_daily_counts_per_utc_day(store: TutorStore) -> None:
    day = 20_000  # 2024-10-04
    times = [
        ("late", day * DAY + 5.0),  # arrives last in its day's order, first in the store's
        ("first", day * DAY),  # midnight belongs to the day it starts
        ("eve", day * DAY - 0.001),  # a hair before midnight: the day before
        ("next", (day + 1) * DAY + 7200.5),
    ]
    _fill(store, times)
    expected = {"2024-10-03": 1, "2024-10-04": 2, "2024-10-05": 1}
    for table in EXPORT_TABLES:
        assert store.daily_counts(table) == expected, table
    with pytest.raises(ValueError, match="unknown table"):
        store.daily_counts("learners")  # type: ignore[arg-type]


def test_daily_counts_of_an_empty_table(store: TutorStore) -> None:
    assert store.daily_counts("feedback") == {}


def test_utc_day_agrees_with_the_labels() -> None:
    assert day_label(20_000) == "2024-10-04" and label_day("2024-10-04") == 20_000
    assert utc_day(20_000 * DAY) == 20_000 and utc_day(20_000 * DAY - 1e-3) == 19_999
    assert utc_day(-0.5) == -1 and day_label(-1) == "1969-12-31"


def test_bandit_policies(store: TutorStore) -> None:
    assert store.bandit_policies() == []
    store.add_arm_observation("p2", "hint", x=[1.0], reward=1.0)
    store.add_arm_observation("p1", "quiz", x=[1.0], reward=0.0)
    store.add_arm_observation("p1", "hint", x=[1.0], reward=1.0)
    assert store.bandit_policies() == ["p1", "p2"]
