"""Backend-specific behaviour outside the shared contract: failures surface as StoreError."""

from __future__ import annotations

from pathlib import Path

import mongomock
import pymongo
import pytest

from store import StoreError
from store.mongo_store import MongoStore
from store.sqlite_store import SQLiteStore


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "tutor.db")
    try:
        assert (tmp_path / "tutor.db-wal").exists()
    finally:
        store.close()


def test_sqlite_closed_store_raises_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "tutor.db")
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError):
        store.ping()


def test_sqlite_unopenable_path_raises_store_error(tmp_path: Path) -> None:
    (tmp_path / "a-directory.db").mkdir()
    with pytest.raises(StoreError):
        SQLiteStore(tmp_path / "a-directory.db")


def test_unreachable_mongodb_raises_store_error() -> None:
    # Port 1 refuses at once; the short selection timeout keeps the test fast.
    client = pymongo.MongoClient("mongodb://127.0.0.1:1", serverSelectionTimeoutMS=200)
    try:
        with pytest.raises(StoreError):
            MongoStore(client=client)
    finally:
        client.close()


def test_mongo_store_leaves_a_passed_client_open() -> None:
    client = mongomock.MongoClient()
    store = MongoStore(client=client, db_name="custom")
    store.close()
    assert "answers" in client["custom"].list_collection_names()


def test_mongo_store_needs_uri_or_client() -> None:
    with pytest.raises(ValueError):
        MongoStore()
