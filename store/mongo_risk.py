"""The MongoDB backend's learners at risk (``store.mongo_store`` mixes this in).

One document per learner (``_id`` = learner_id). The upsert matches only a stored record no
newer than the new one; when a newer one is stored, the filter misses, the upsert's insert hits
the existing ``_id`` and DuplicateKeyError is the "kept the newer run" answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from pymongo.errors import DuplicateKeyError

from store.records import LearnerRiskRecord


class MongoRiskMixin:
    """Needs the store's ``_db`` and ``_errors()``."""

    _db: Any
    _errors: Callable[[], contextlib.AbstractContextManager[None]]

    def _open_risk(self) -> None:
        self._learner_risk = self._db["learner_risk"]  # keyed by _id: no index to create

    def put_learner_risks(self, records: Sequence[LearnerRiskRecord]) -> int:
        written = 0
        with self._errors():
            for record in records:
                try:
                    self._learner_risk.update_one(
                        {"_id": record.learner_id, "scored_at": {"$lte": record.scored_at}},
                        {"$set": record.model_dump()},
                        upsert=True,
                    )
                except DuplicateKeyError:
                    continue  # a newer run's record is stored
                written += 1
        return written

    def learner_risk(self, learner_id: str) -> LearnerRiskRecord | None:
        with self._errors():
            doc = self._learner_risk.find_one({"_id": learner_id})
        if doc is None:
            return None
        return LearnerRiskRecord.model_validate({k: v for k, v in doc.items() if k != "_id"})
