"""MongoDB: reads by time across learners, and the model lifecycle's records.

A mixin of ``store.mongo_store.MongoStore`` (kept apart so neither module grows past a readable
size). Idempotent inserts rest on unique indexes, as in the rest of the backend: a duplicate
insert raises DuplicateKeyError, which is the "already there" answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pymongo
from bson import ObjectId
from pymongo.errors import BulkWriteError, DuplicateKeyError

from store.base import SECONDS_PER_DAY, ExportTable, check_batch_size, check_export_table, day_label
from store.records import (
    AnswerRecord,
    FeedbackRecord,
    RewardRecord,
    RolloutEventRecord,
    ServingStatsRecord,
    ShadowOutputRecord,
    TurnRecord,
)

_ASC, _DESC = pymongo.ASCENDING, pymongo.DESCENDING


class MongoLifecycleMixin:
    # Provided by MongoStore.
    _db: Any
    _turns: Any
    _answers: Any
    _rewards: Any
    _feedback: Any
    _bandit: Any
    _errors: Callable[[], contextlib.AbstractContextManager[None]]
    _turn: Callable[[Mapping[str, Any]], TurnRecord]
    _reward: Callable[[Mapping[str, Any]], RewardRecord]

    def _open_lifecycle(self) -> None:
        """Create the collections' indexes (idempotent: a no-op on a database that has them)."""
        self._rollout_events = self._db["rollout_events"]  # _id = event_id: one per event
        self._shadow_outputs = self._db["shadow_outputs"]
        self._serving_stats = self._db["serving_stats"]
        # Reads by time across learners: the filter and the sort share one index.
        self._turns.create_index([("ts", _ASC), ("seq", _ASC)])
        self._answers.create_index([("ts", _ASC), ("_id", _ASC)])
        self._rewards.create_index([("ts", _ASC), ("seq", _ASC)])
        self._feedback.create_index([("ts", _ASC), ("seq", _ASC), ("_id", _ASC)])
        self._rollout_events.create_index([("model", _ASC), ("ts", _ASC), ("seq", _ASC)])
        self._rollout_events.create_index([("ts", _ASC), ("seq", _ASC)])
        self._shadow_outputs.create_index(
            [("turn_id", _ASC), ("model", _ASC), ("version", _ASC)], unique=True
        )
        self._shadow_outputs.create_index([("model", _ASC), ("ts", _ASC), ("_id", _ASC)])
        self._serving_stats.create_index([("model", _ASC), ("window_end", _ASC), ("_id", _ASC)])

    def _by_time(
        self,
        collection: Any,
        query: Mapping[str, Any],
        *,
        field: str = "ts",
        tie: str | tuple[str, ...] = "seq",
        since: float | None,
        until: float | None = None,
        batch_size: int,
    ) -> Iterator[dict[str, Any]]:
        """Documents matching `query` with since <= field < until, ordered by (field, *tie)."""
        check_batch_size(batch_size)
        bounds: dict[str, float] = {}
        if since is not None:
            bounds["$gte"] = since
        if until is not None:
            bounds["$lt"] = until
        if bounds:
            query = {**query, field: bounds}
        ties = (tie,) if isinstance(tie, str) else tie
        with self._errors():
            cursor = collection.find(query).sort([(field, _ASC), *((t, _ASC) for t in ties)])
            yield from cursor.batch_size(batch_size)

    # ---- reads by time ----------------------------------------------------------------------

    def iter_turns(
        self, *, since: float | None = None, until: float | None = None, batch_size: int = 500
    ) -> Iterator[TurnRecord]:
        docs = self._by_time(self._turns, {}, since=since, until=until, batch_size=batch_size)
        for doc in docs:
            yield self._turn(doc)

    def iter_rewards(
        self, *, since: float | None = None, until: float | None = None, batch_size: int = 500
    ) -> Iterator[RewardRecord]:
        docs = self._by_time(self._rewards, {}, since=since, until=until, batch_size=batch_size)
        for doc in docs:
            yield self._reward(doc)

    def iter_answers(
        self, *, since: float | None = None, until: float | None = None, batch_size: int = 500
    ) -> Iterator[AnswerRecord]:
        docs = self._by_time(
            self._answers, {}, tie="_id", since=since, until=until, batch_size=batch_size
        )
        for doc in docs:
            yield AnswerRecord.model_validate(_fields(doc))

    def iter_feedback(
        self, *, since: float | None = None, until: float | None = None, batch_size: int = 500
    ) -> Iterator[FeedbackRecord]:
        # _id (the turn_id) last: feedback stored before it carried a seq still sorts one way.
        docs = self._by_time(
            self._feedback,
            {},
            tie=("seq", "_id"),
            since=since,
            until=until,
            batch_size=batch_size,
        )
        for doc in docs:
            yield FeedbackRecord.model_validate(_fields(doc))

    def daily_counts(self, table: ExportTable) -> dict[str, int]:
        collection = {
            "turns": self._turns,
            "answers": self._answers,
            "feedback": self._feedback,
            "rewards": self._rewards,
        }[check_export_table(table)]
        # floor(ts / 86400) as utc_day computes it (both are one IEEE division and a floor).
        day = {"$floor": {"$divide": ["$ts", SECONDS_PER_DAY]}}
        with self._errors():
            groups = list(collection.aggregate([{"$group": {"_id": day, "n": {"$sum": 1}}}]))
        groups.sort(key=lambda group: group["_id"])
        return {day_label(int(group["_id"])): int(group["n"]) for group in groups}

    def bandit_policies(self) -> list[str]:
        with self._errors():
            return sorted(self._bandit.distinct("policy", {"n": {"$gt": 0}}))

    # ---- rollout history --------------------------------------------------------------------

    def add_rollout_event(self, event: RolloutEventRecord) -> bool:
        with self._errors():
            try:
                self._rollout_events.insert_one(
                    {"_id": event.event_id, "seq": ObjectId(), **event.model_dump()}
                )
            except DuplicateKeyError:
                return False
        return True

    def rollout_events(
        self, model: str | None = None, *, limit: int = 100
    ) -> list[RolloutEventRecord]:
        if limit <= 0:  # Mongo reads limit(0) as "no limit"
            return []
        query = {} if model is None else {"model": model}
        with self._errors():
            docs = list(
                self._rollout_events.find(query).sort([("ts", _DESC), ("seq", _DESC)]).limit(limit)
            )
        return [RolloutEventRecord.model_validate(_fields(doc)) for doc in reversed(docs)]

    # ---- shadow outputs ---------------------------------------------------------------------

    def add_shadow_outputs(self, records: Sequence[ShadowOutputRecord]) -> int:
        if not records:
            return 0
        docs = [{"_id": ObjectId(), **r.model_dump()} for r in records]
        with self._errors():
            try:
                return len(self._shadow_outputs.insert_many(docs, ordered=False).inserted_ids)
            except BulkWriteError as exc:  # duplicates are skipped; the rest were inserted
                if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                    raise
                return int(exc.details.get("nInserted", 0))

    def iter_shadow_outputs(
        self, model: str, *, since: float | None = None, batch_size: int = 500
    ) -> Iterator[ShadowOutputRecord]:
        docs = self._by_time(
            self._shadow_outputs, {"model": model}, tie="_id", since=since, batch_size=batch_size
        )
        for doc in docs:
            yield ShadowOutputRecord.model_validate(_fields(doc))

    # ---- serving counts ---------------------------------------------------------------------

    def add_serving_stats(self, record: ServingStatsRecord) -> None:
        with self._errors():
            self._serving_stats.insert_one({"_id": ObjectId(), **record.model_dump()})

    def serving_stats(self, model: str, *, since: float | None = None) -> list[ServingStatsRecord]:
        docs = self._by_time(
            self._serving_stats,
            {"model": model},
            field="window_end",
            tie="_id",
            since=since,
            batch_size=500,
        )
        return [ServingStatsRecord.model_validate(_fields(doc)) for doc in docs]


def _fields(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The record's own fields: without the backend's keys (_id, seq)."""
    return {k: v for k, v in doc.items() if k not in ("_id", "seq")}
