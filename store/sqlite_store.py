"""SQLite backend: the embedded default, shared by replica processes through one file.

WAL lets readers proceed while one writer holds the lock; busy_timeout makes writers queue
instead of failing; every read-modify-write runs in BEGIN IMMEDIATE so the write lock is taken
up front (a deferred transaction that upgrades from read to write gets SQLITE_BUSY at once in
WAL mode, without waiting).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from store.base import (
    AnswerRow,
    StoreError,
    TutorStore,
    check_observation,
    dimension_error,
    outer_flat,
)
from store.parsed_turns import ParsedTurns
from store.records import (
    ANSWER_LIST,
    AnswerRecord,
    ArmStats,
    FeedbackRecord,
    LearnerRecord,
    RewardRecord,
    TurnRecord,
)
from store.sqlite_keys import SQLiteKeysMixin
from store.sqlite_lifecycle import SQLiteLifecycleMixin
from store.sqlite_risk import SQLiteRiskMixin
from store.sqlite_schema import SCHEMA

_BUSY_TIMEOUT_S = 10.0


class SQLiteStore(SQLiteLifecycleMixin, SQLiteKeysMixin, SQLiteRiskMixin, TutorStore):
    """The store in one SQLite file (the lifecycle records and reads by time: the mixin)."""

    def __init__(self, path: str | Path, *, timeout_s: float = _BUSY_TIMEOUT_S) -> None:
        """``timeout_s``: how long a write waits for another connection's lock (busy_timeout)."""
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # One connection behind a lock: the store is I/O-light and this keeps transactions from
        # interleaving between threads of one replica. isolation_level=None hands transaction
        # control to us (explicit BEGIN IMMEDIATE) instead of the module's implicit BEGINs.
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._timeout_s = timeout_s
        self._reopen = False
        self._parsed_turns = ParsedTurns()
        try:
            self._conn = self._connect()
            with self._transaction() as conn:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
        except (sqlite3.Error, StoreError) as exc:
            self.close()
            raise StoreError(f"cannot open SQLite store at {self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self._timeout_s * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL is durable across application crashes in WAL mode; only an OS crash can
        # lose the last commits, which is acceptable for tutoring logs.
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    # ---- plumbing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise StoreError("the SQLite store is closed")
            if self._reopen:
                self._reopen_connection()
            try:
                yield self._conn
            except sqlite3.Error as exc:
                # A file that was write-protected when the connection opened gives SQLite a
                # read-only connection for good (it falls back silently); reopen on the next
                # call, so the writes work again once the file does (the outbox keeps trying).
                self._reopen = "readonly" in str(exc).lower()
                raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    def _reopen_connection(self) -> None:
        try:
            fresh = self._connect()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: cannot reopen: {exc}") from exc
        old, self._conn, self._reopen = self._conn, fresh, False
        with contextlib.suppress(sqlite3.Error):
            old.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back on its own (e.g. disk full); a second
                # ROLLBACK would then raise and hide the original error.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # ---- health -----------------------------------------------------------------------------

    def ping(self) -> None:
        with self._connection() as conn:
            conn.execute("SELECT 1").fetchone()

    # ---- learners ---------------------------------------------------------------------------

    def get_learner(self, learner_id: str) -> LearnerRecord | None:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT * FROM learners WHERE learner_id = ?", (learner_id,)
            ).fetchone()
        return None if row is None else LearnerRecord(**dict(row))

    def get_or_create_learner(self, learner_id: str, *, now: float) -> tuple[LearnerRecord, bool]:
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO learners (learner_id, created_at) VALUES (?, ?) "
                "ON CONFLICT (learner_id) DO NOTHING",
                (learner_id, now),
            )
            created = cursor.rowcount == 1
            row = conn.execute(
                "SELECT * FROM learners WHERE learner_id = ?", (learner_id,)
            ).fetchone()
        return LearnerRecord(**dict(row)), created

    # ---- answers ----------------------------------------------------------------------------

    def add_answer(self, answer: AnswerRecord) -> bool:
        with self._connection() as conn:
            cursor = conn.execute(
                "INSERT INTO answers (learner_id, source_id, item_id, skill_id, correct, ts) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (learner_id, source_id) DO NOTHING",
                (
                    answer.learner_id,
                    answer.source_id,
                    answer.item_id,
                    answer.skill_id,
                    int(answer.correct),
                    answer.ts,
                ),
            )
        return cursor.rowcount == 1

    def _newest_answers(self, columns: str, learner_id: str, limit: int) -> list[tuple]:
        """The newest ``limit`` answers' ``columns`` as plain tuples, oldest first."""
        if limit <= 0:
            return []
        with self._connection() as conn:
            cursor = conn.cursor()
            cursor.row_factory = None  # plain tuples, not sqlite3.Row
            rows = cursor.execute(
                f"SELECT {columns} FROM answers "  # columns: this module's constants, never input
                "WHERE learner_id = ? ORDER BY ts DESC, seq DESC LIMIT ?",
                (learner_id, limit),
            ).fetchall()
        rows.reverse()
        return rows

    def answers(self, learner_id: str, *, limit: int = 1000) -> list[AnswerRecord]:
        fields = ("learner_id", "source_id", "item_id", "skill_id", "correct", "ts")
        rows = self._newest_answers(", ".join(fields), learner_id, limit)
        # One validation of the whole list (pydantic-core, ~1.7x faster than a model per row):
        # a turn reads up to 1000 answers. `correct` comes back as 0/1, which bool accepts.
        return ANSWER_LIST.validate_python([dict(zip(fields, row, strict=True)) for row in rows])

    def answer_count(self, learner_id: str) -> int:
        with self._connection() as conn:  # answers_by_learner covers it: no table rows read
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM answers WHERE learner_id = ?", (learner_id,)
            ).fetchone()
        return int(count)

    def answer_rows(self, learner_id: str, *, limit: int = 1000) -> list[AnswerRow]:
        rows = self._newest_answers("item_id, skill_id, correct", learner_id, limit)
        return [(item, skill, bool(correct)) for item, skill, correct in rows]

    # ---- turns ------------------------------------------------------------------------------

    def save_turn(self, turn: TurnRecord) -> bool:
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO turns (turn_id, learner_id, ts, record) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (turn_id) DO NOTHING",
                (turn.turn_id, turn.learner_id, turn.ts, turn.model_dump_json()),
            )
            if cursor.rowcount != 1:
                return False
            # max() rather than a plain set so a late-arriving older turn cannot move it back;
            # SQLite's scalar max() returns NULL if any argument is NULL, hence the COALESCE.
            conn.execute(
                "INSERT INTO learners (learner_id, created_at, turn_count, last_turn_at) "
                "VALUES (?, ?, 1, ?) ON CONFLICT (learner_id) DO UPDATE SET "
                "turn_count = turn_count + 1, "
                "last_turn_at = max(coalesce(last_turn_at, excluded.last_turn_at), "
                "excluded.last_turn_at)",
                (turn.learner_id, turn.ts, turn.ts),
            )
        return True

    def get_turn(self, turn_id: str) -> TurnRecord | None:
        with self._connection() as conn:
            row = conn.execute("SELECT record FROM turns WHERE turn_id = ?", (turn_id,)).fetchone()
        return None if row is None else TurnRecord.model_validate_json(row["record"])

    def recent_turns(self, learner_id: str, *, limit: int = 20) -> list[TurnRecord]:
        if limit <= 0:
            return []
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT turn_id, record FROM turns WHERE learner_id = ?"
                " ORDER BY ts DESC, seq DESC LIMIT ?",
                (learner_id, limit),
            ).fetchall()
        return self._parsed_turns.records(
            ((row["turn_id"], row["record"]) for row in reversed(rows)),
            TurnRecord.model_validate_json,
        )

    # ---- feedback ---------------------------------------------------------------------------

    def add_feedback(self, feedback: FeedbackRecord) -> bool:
        with self._connection() as conn:
            cursor = conn.execute(
                "INSERT INTO feedback (turn_id, learner_id, reward, item_id, skill_id, correct, ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (turn_id) DO NOTHING",
                (
                    feedback.turn_id,
                    feedback.learner_id,
                    feedback.reward,
                    feedback.item_id,
                    feedback.skill_id,
                    None if feedback.correct is None else int(feedback.correct),
                    feedback.ts,
                ),
            )
        return cursor.rowcount == 1

    def get_feedback(self, turn_id: str) -> FeedbackRecord | None:
        with self._connection() as conn:
            row = conn.execute("SELECT * FROM feedback WHERE turn_id = ?", (turn_id,)).fetchone()
        if row is None:
            return None
        values: dict[str, Any] = dict(row)
        if values["correct"] is not None:
            values["correct"] = bool(values["correct"])
        return FeedbackRecord(**values)

    # ---- bandit -----------------------------------------------------------------------------

    def add_arm_observation(
        self, policy: str, arm: str, *, x: Sequence[float], reward: float
    ) -> None:
        values = check_observation(x, reward)
        with self._transaction() as conn:
            self._observe(conn, policy, arm, values, float(reward))

    @staticmethod
    def _observe(
        conn: sqlite3.Connection, policy: str, arm: str, values: list[float], reward: float
    ) -> None:
        """The additive update, inside the caller's transaction.

        Read-modify-write of JSON arrays, safe because BEGIN IMMEDIATE holds the file's write
        lock from the read to the commit: no other process can interleave an update.
        """
        dim = len(values)
        row = conn.execute(
            "SELECT n, reward_sum, a, b FROM bandit WHERE policy = ? AND arm = ?",
            (policy, arm),
        ).fetchone()
        if row is None:
            n, reward_sum, a, b = 0, 0.0, [0.0] * (dim * dim), [0.0] * dim
        else:
            n, reward_sum = row["n"], row["reward_sum"]
            a, b = json.loads(row["a"]), json.loads(row["b"])
            if len(b) != dim:
                raise dimension_error(policy, arm, len(b), dim)
        a = [old + inc for old, inc in zip(a, outer_flat(values), strict=True)]
        b = [old + reward * xi for old, xi in zip(b, values, strict=True)]
        conn.execute(
            "INSERT INTO bandit (policy, arm, n, reward_sum, a, b) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (policy, arm) DO UPDATE SET n = excluded.n, "
            "reward_sum = excluded.reward_sum, a = excluded.a, b = excluded.b",
            (policy, arm, n + 1, reward_sum + reward, json.dumps(a), json.dumps(b)),
        )

    def bandit_stats(self, policy: str) -> dict[str, ArmStats]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT arm, n, reward_sum, a, b FROM bandit WHERE policy = ? AND n > 0",
                (policy,),
            ).fetchall()
        return {
            row["arm"]: ArmStats(
                arm=row["arm"],
                n=row["n"],
                reward_sum=row["reward_sum"],
                a=json.loads(row["a"]),
                b=json.loads(row["b"]),
            )
            for row in rows
        }

    # ---- rewards ----------------------------------------------------------------------------

    def add_reward(self, reward: RewardRecord, *, context: Sequence[float] | None) -> bool:
        values = None if context is None else check_observation(context, reward.reward)
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO rewards (turn_id, source, learner_id, policy, strategy, reward, ts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (turn_id, source) DO NOTHING",
                (
                    reward.turn_id,
                    reward.source,
                    reward.learner_id,
                    reward.policy,
                    reward.strategy,
                    reward.reward,
                    reward.ts,
                ),
            )
            if cursor.rowcount != 1:
                return False
            if values is not None:
                # Same transaction: the reward row and its statistics commit together or not at all.
                self._observe(conn, reward.policy, reward.strategy, values, reward.reward)
        return True

    def learner_rewards(self, learner_id: str, *, limit: int = 1000) -> list[RewardRecord]:
        if limit <= 0:
            return []
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT * FROM rewards WHERE learner_id = ? ORDER BY ts DESC, rowid DESC LIMIT ?",
                (learner_id, limit),
            ).fetchall()
        return [RewardRecord(**dict(row)) for row in reversed(rows)]

    # ---- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
