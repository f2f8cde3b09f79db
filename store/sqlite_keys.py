"""The SQLite backend's API keys (``store.sqlite_store`` mixes this in).

A name is unique among live keys only (a partial unique index), so an operator can revoke a key
and issue a new one under the same name; the hash is unique over all keys.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable

from store.records import ApiKeyRecord

# Appended to store.sqlite_schema.SCHEMA (no semicolons in comments there).
KEYS_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    revoked_at REAL,
    record TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;
"""


class SQLiteKeysMixin:
    """Needs the store's ``_connection()``; each write is one statement, atomic on its own."""

    _connection: Callable[[], contextlib.AbstractContextManager[sqlite3.Connection]]

    def add_api_key(self, record: ApiKeyRecord) -> bool:
        with self._connection() as conn:
            cursor = conn.execute(
                "INSERT INTO api_keys (name, key_hash, revoked_at, record) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (record.name, record.key_hash, record.revoked_at, record.model_dump_json()),
            )
        return cursor.rowcount == 1

    def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT record, revoked_at FROM api_keys WHERE key_hash = ?", (key_hash,)
            ).fetchone()
        return None if row is None else _record(row)

    def list_api_keys(self) -> list[ApiKeyRecord]:
        with self._connection() as conn:
            rows = conn.execute("SELECT record, revoked_at FROM api_keys ORDER BY seq").fetchall()
        return [_record(row) for row in rows]

    def revoke_api_key(self, name: str, *, now: float) -> bool:
        with self._connection() as conn:
            cursor = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (now, name),
            )
        return cursor.rowcount == 1


def _record(row: sqlite3.Row) -> ApiKeyRecord:
    # revoked_at lives in its own column (the partial index reads it); the JSON keeps the rest.
    record = ApiKeyRecord.model_validate_json(row["record"])
    return record.model_copy(update={"revoked_at": row["revoked_at"]})
