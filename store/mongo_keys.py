"""The MongoDB backend's API keys (``store.mongo_store`` mixes this in).

A live key carries ``live_name`` (its name) under a unique sparse index; revoking it sets
``revoked_at`` and unsets ``live_name`` in one update, so the name is free again and a
revoked key never blocks it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pymongo
from pymongo.errors import DuplicateKeyError

from store.records import ApiKeyRecord


class MongoKeysMixin:
    """Needs the store's ``_db`` and ``_errors()``."""

    _db: Any
    _errors: Callable[[], contextlib.AbstractContextManager[None]]

    def _open_keys(self) -> None:
        self._api_keys = self._db["api_keys"]
        self._api_keys.create_index("key_hash", unique=True)
        self._api_keys.create_index("live_name", unique=True, sparse=True)
        self._api_keys.create_index([("created_at", pymongo.ASCENDING)])

    def add_api_key(self, record: ApiKeyRecord) -> bool:
        doc = record.model_dump()
        if record.revoked_at is None:
            doc["live_name"] = record.name
        with self._errors():
            try:
                self._api_keys.insert_one(doc)
            except DuplicateKeyError:
                return False
        return True

    def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        with self._errors():
            doc = self._api_keys.find_one({"key_hash": key_hash})
        return None if doc is None else _record(doc)

    def list_api_keys(self) -> list[ApiKeyRecord]:
        with self._errors():
            docs = list(self._api_keys.find().sort([("created_at", 1), ("_id", 1)]))
        return [_record(doc) for doc in docs]

    def revoke_api_key(self, name: str, *, now: float) -> bool:
        with self._errors():
            result = self._api_keys.update_one(
                {"live_name": name}, {"$set": {"revoked_at": now}, "$unset": {"live_name": ""}}
            )
        return result.modified_count == 1


def _record(doc: dict[str, Any]) -> ApiKeyRecord:
    return ApiKeyRecord.model_validate(
        {k: v for k, v in doc.items() if k not in ("_id", "live_name")}
    )
