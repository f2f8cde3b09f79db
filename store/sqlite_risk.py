"""The SQLite backend's learners at risk (``store.sqlite_store`` mixes this in).

One row per learner, the record as JSON beside the ``scored_at`` the upsert compares: a later
run replaces it, an earlier one (a job finishing late) does not.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence

from store.records import LearnerRiskRecord

# Appended to store.sqlite_schema.SCHEMA (no semicolons in comments there).
RISK_SCHEMA = """
CREATE TABLE IF NOT EXISTS learner_risk (
    learner_id TEXT PRIMARY KEY,
    scored_at REAL NOT NULL,
    record TEXT NOT NULL
);
"""


class SQLiteRiskMixin:
    """Needs the store's ``_connection()``; the batch is one statement per row in one lock."""

    _connection: Callable[[], contextlib.AbstractContextManager[sqlite3.Connection]]

    def put_learner_risks(self, records: Sequence[LearnerRiskRecord]) -> int:
        rows = [(r.learner_id, r.scored_at, r.model_dump_json()) for r in records]
        if not rows:
            return 0
        with self._connection() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT INTO learner_risk (learner_id, scored_at, record) VALUES (?, ?, ?) "
                "ON CONFLICT (learner_id) DO UPDATE SET scored_at = excluded.scored_at, "
                "record = excluded.record WHERE excluded.scored_at >= learner_risk.scored_at",
                rows,
            )
            return conn.total_changes - before

    def learner_risk(self, learner_id: str) -> LearnerRiskRecord | None:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT record FROM learner_risk WHERE learner_id = ?", (learner_id,)
            ).fetchone()
        return None if row is None else LearnerRiskRecord.model_validate_json(row["record"])
