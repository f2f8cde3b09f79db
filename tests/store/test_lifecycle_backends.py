"""Backend-specific checks of the lifecycle additions: an existing database keeps working, and
reads by time use indexes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import mongomock

from store.mongo_store import MongoStore
from store.sqlite_store import SQLiteStore
from tests.store.test_contract import make_answer, make_reward, make_turn
from tests.store.test_lifecycle_contract import make_event, make_shadow, make_stats

# What this change added to the SQLite schema: dropped again to stand for an older database.
_ADDED_TABLES = ("rollout_events", "shadow_outputs", "serving_stats")
_ADDED_INDEXES = ("turns_by_ts", "answers_by_ts", "rewards_by_ts")


def test_sqlite_database_from_before_the_lifecycle_tables_gains_them(tmp_path: Path) -> None:
    path = tmp_path / "tutor.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as conn:
        for table in _ADDED_TABLES:
            conn.execute(f"DROP TABLE {table}")
        for index in _ADDED_INDEXES:
            conn.execute(f"DROP INDEX {index}")
    conn.close()
    old = SQLiteStore(path)
    turn = make_turn("T1", ts=5.0)
    old.save_turn(turn)
    old.add_answer(make_answer("T1:answer", 5.0))
    old.close()

    store = SQLiteStore(path)  # must not fail on the existing tables, and add the new ones
    try:
        assert list(store.iter_turns(since=1.0)) == [turn]
        assert [a.source_id for a in store.iter_answers(since=1.0)] == ["T1:answer"]
        assert store.add_rollout_event(make_event("e1", 6.0)) is True
        assert store.add_shadow_output(make_shadow("T1", 6.0)) is True
        store.add_serving_stats(make_stats(6.0))
        assert len(store.serving_stats("emotion", since=0.0)) == 1
        assert store.get_learner("L1") is not None
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert set(_ADDED_TABLES) | set(_ADDED_INDEXES) <= names


def test_sqlite_reads_by_time_search_an_index_without_sorting(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "tutor.db")
    try:
        for i in range(5):
            turn = make_turn(f"T{i}", ts=float(i))
            store.save_turn(turn)
            store.add_answer(make_answer(f"T{i}:answer", float(i)))
            store.add_reward(make_reward(f"T{i}", ts=float(i)), context=None)
            store.add_shadow_output(make_shadow(f"T{i}", float(i)))
            store.add_serving_stats(make_stats(float(i)))
            store.add_rollout_event(make_event(f"e{i}", float(i)))
        conn = store._conn
        assert conn is not None
        statements: list[str] = []
        # The trace gets each statement with its parameters filled in, ready to EXPLAIN.
        conn.set_trace_callback(statements.append)
        # batch_size=2 so the keyset pages after the first are checked too.
        list(store.iter_turns(since=1.0, batch_size=2))
        list(store.iter_rewards(since=1.0, batch_size=2))
        list(store.iter_answers(since=1.0, batch_size=2))
        list(store.iter_shadow_outputs("emotion", since=1.0, batch_size=2))
        store.serving_stats("emotion", since=1.0)
        store.rollout_events("difficulty", limit=2)
        conn.set_trace_callback(None)
        selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        assert len(selects) >= 12
        for sql in selects:
            plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            assert "SEARCH" in plan and "USING INDEX" in plan, (sql, plan)
            assert "TEMP B-TREE" not in plan, (sql, plan)
    finally:
        store.close()


def test_mongo_lifecycle_indexes_and_reopen() -> None:
    client = mongomock.MongoClient()
    first = MongoStore(client=client, db_name="t")
    first.add_shadow_output(make_shadow("T1", 1.0))
    first.close()
    store = MongoStore(client=client, db_name="t")  # index creation is idempotent
    indexes = client["t"]["shadow_outputs"].index_information().values()
    unique = [i["key"] for i in indexes if i.get("unique")]
    assert [("turn_id", 1), ("model", 1), ("version", 1)] in unique
    assert client["t"]["turns"].index_information()  # the (ts, seq) index among them
    assert store.add_shadow_output(make_shadow("T1", 2.0)) is False
    store.close()
