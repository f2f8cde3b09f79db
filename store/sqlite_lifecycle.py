"""SQLite: reads by time across learners, and the model lifecycle's records.

A mixin of ``store.sqlite_store.SQLiteStore`` (kept apart so neither module grows past a
readable size); it uses only the store's ``_connection``. Each write is one statement, atomic on
its own, so none needs an explicit transaction.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from store.base import ExportTable, check_batch_size, check_export_table, day_label
from store.records import (
    AnswerRecord,
    FeedbackRecord,
    RewardRecord,
    RolloutEventRecord,
    ServingStatsRecord,
    ShadowOutputRecord,
    TurnRecord,
)

_ROLLOUT_COLUMNS = "event_id, model, action, from_version, to_version, percent, reason, actor, ts"
_SHADOW_COLUMNS = "turn_id, learner_id, model, version, served_version, output, ts"
_STATS_COLUMNS = (
    "model, version, replica, window_start, window_end, requests, errors, latency_counts"
)


class SQLiteLifecycleMixin:
    # Provided by SQLiteStore: the shared connection, under the store's lock.
    _connection: Callable[[], contextlib.AbstractContextManager[sqlite3.Connection]]

    def _scan(
        self,
        select: str,
        *,
        where: str = "",
        params: tuple[Any, ...] = (),
        ts: str = "ts",
        tie: str = "seq",
        since: float | None,
        until: float | None = None,
        batch_size: int,
    ) -> Iterator[sqlite3.Row]:
        """Rows of `select` (which names `tie` as _tie) with since <= ts < until, ordered by
        (ts, tie), in keyset pages.

        Each page is a short read that resumes after the last (ts, tie) seen, so writers are
        never held up for a whole export, and with an index on (..., ts, tie) every page is a
        range scan: no sort, however large the table.
        """
        check_batch_size(batch_size)
        conditions, args = ([where], params) if where else ([], ())
        if until is not None:  # holds on every page
            conditions, args = [*conditions, f"{ts} < ?"], (*args, until)
        if since is None:
            sql, page_args = _page_sql(select, conditions, ts, tie), args
        else:
            sql, page_args = _page_sql(select, [*conditions, f"{ts} >= ?"], ts, tie), (*args, since)
        while True:
            with self._connection() as conn:
                rows = conn.execute(sql, (*page_args, batch_size)).fetchall()
            yield from rows
            if len(rows) < batch_size:
                return
            # Row values compare lexicographically, and SQLite turns this into an index range.
            sql = _page_sql(select, [*conditions, f"({ts}, {tie}) > (?, ?)"], ts, tie)
            page_args = (*args, rows[-1][ts], rows[-1]["_tie"])

    # ---- reads by time ----------------------------------------------------------------------

    def iter_turns(
        self, *, since: float | None = None, until: float | None = None, batch_size: int = 500
    ) -> Iterator[TurnRecord]:
        for row in self._scan(
            "SELECT seq AS _tie, ts, record FROM turns",
            since=since,
            until=until,
            batch_size=batch_size,
        ):
            yield TurnRecord.model_validate_json(row["record"])

    def iter_rewards(
        self, *, since: float | None = None, until: float | None = None, batch_size: int = 500
    ) -> Iterator[RewardRecord]:
        for row in self._scan(
            "SELECT rowid AS _tie, * FROM rewards",
            tie="rowid",
            since=since,
            until=until,
            batch_size=batch_size,
        ):
            values = _record_values(row)
            yield RewardRecord(**values)

    def iter_answers(
        self, *, since: float | None = None, until: float | None = None, batch_size: int = 500
    ) -> Iterator[AnswerRecord]:
        for row in self._scan(
            "SELECT seq AS _tie, learner_id, source_id, item_id, skill_id, correct, ts "
            "FROM answers",
            since=since,
            until=until,
            batch_size=batch_size,
        ):
            values = _record_values(row)
            values["correct"] = bool(values["correct"])
            yield AnswerRecord(**values)

    def iter_feedback(
        self, *, since: float | None = None, until: float | None = None, batch_size: int = 500
    ) -> Iterator[FeedbackRecord]:
        for row in self._scan(
            "SELECT rowid AS _tie, * FROM feedback",
            tie="rowid",
            since=since,
            until=until,
            batch_size=batch_size,
        ):
            values = _record_values(row)
            if values["correct"] is not None:
                values["correct"] = bool(values["correct"])
            yield FeedbackRecord(**values)

    def daily_counts(self, table: ExportTable) -> dict[str, int]:
        check_export_table(table)  # the name goes into the SQL: only the four tables
        # floor(ts / 86400) as utc_day computes it: CAST truncates towards zero, so one less
        # for a negative quotient with a fraction. The (ts) index covers the whole scan.
        day = "CAST(ts / 86400.0 AS INTEGER) - (ts / 86400.0 < CAST(ts / 86400.0 AS INTEGER))"
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {day} AS day, count(*) AS n FROM {table} GROUP BY day ORDER BY day"
            ).fetchall()
        return {day_label(row["day"]): row["n"] for row in rows}

    def bandit_policies(self) -> list[str]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT policy FROM bandit WHERE n > 0 ORDER BY policy"
            ).fetchall()
        return [row["policy"] for row in rows]

    # ---- rollout history --------------------------------------------------------------------

    def add_rollout_event(self, event: RolloutEventRecord) -> bool:
        with self._connection() as conn:
            cursor = conn.execute(
                f"INSERT INTO rollout_events ({_ROLLOUT_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
                (
                    event.event_id,
                    event.model,
                    event.action,
                    event.from_version,
                    event.to_version,
                    event.percent,
                    event.reason,
                    event.actor,
                    event.ts,
                ),
            )
        return cursor.rowcount == 1

    def rollout_events(
        self, model: str | None = None, *, limit: int = 100
    ) -> list[RolloutEventRecord]:
        if limit <= 0:
            return []
        where, params = ("WHERE model = ?", (model,)) if model is not None else ("", ())
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_ROLLOUT_COLUMNS} FROM rollout_events {where} "
                "ORDER BY ts DESC, seq DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [RolloutEventRecord(**dict(row)) for row in reversed(rows)]

    # ---- shadow outputs ---------------------------------------------------------------------

    def add_shadow_outputs(self, records: Sequence[ShadowOutputRecord]) -> int:
        rows = [
            (
                r.turn_id,
                r.learner_id,
                r.model,
                r.version,
                r.served_version,
                json.dumps(r.output),
                r.ts,
            )
            for r in records
        ]
        if not rows:
            return 0
        with self._connection() as conn:
            before = conn.total_changes
            conn.executemany(
                f"INSERT INTO shadow_outputs ({_SHADOW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (turn_id, model, version) DO NOTHING",
                rows,
            )
            return conn.total_changes - before

    def iter_shadow_outputs(
        self, model: str, *, since: float | None = None, batch_size: int = 500
    ) -> Iterator[ShadowOutputRecord]:
        for row in self._scan(
            f"SELECT seq AS _tie, {_SHADOW_COLUMNS} FROM shadow_outputs",
            where="model = ?",
            params=(model,),
            since=since,
            batch_size=batch_size,
        ):
            values = _record_values(row)
            values["output"] = json.loads(values["output"])
            yield ShadowOutputRecord(**values)

    # ---- serving counts ---------------------------------------------------------------------

    def add_serving_stats(self, record: ServingStatsRecord) -> None:
        with self._connection() as conn:
            conn.execute(
                f"INSERT INTO serving_stats ({_STATS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.model,
                    record.version,
                    record.replica,
                    record.window_start,
                    record.window_end,
                    record.requests,
                    record.errors,
                    json.dumps(record.latency_counts),
                ),
            )

    def serving_stats(self, model: str, *, since: float | None = None) -> list[ServingStatsRecord]:
        where, params = "model = ?", (model,)
        if since is not None:
            where, params = f"{where} AND window_end >= ?", (model, since)
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_STATS_COLUMNS} FROM serving_stats WHERE {where} "
                "ORDER BY window_end, seq",
                params,
            ).fetchall()
        return [
            ServingStatsRecord(**{**dict(row), "latency_counts": json.loads(row["latency_counts"])})
            for row in rows
        ]


def _page_sql(select: str, conditions: list[str], ts: str, tie: str) -> str:
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"{select}{where} ORDER BY {ts}, {tie} LIMIT ?"


def _record_values(row: sqlite3.Row) -> dict[str, Any]:
    """A scanned row's columns without the scan's own tie-breaker."""
    values = dict(row)
    values.pop("_tie")
    return values
