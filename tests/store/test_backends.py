"""Backend-specific behaviour outside the shared contract: failures surface as StoreError."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import mongomock
import pymongo
import pytest

from store import StoreError
from store.mongo_store import MongoStore
from store.records import LearnerRecord
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


def test_sqlite_reopens_a_connection_that_opened_read_only(tmp_path: Path) -> None:
    """SQLite opens a write-protected file read-only without a word, and such a connection
    stays read-only after the file is writable again: the store reopens it on the next call."""
    store = SQLiteStore(tmp_path / "tutor.db")
    store._conn = sqlite3.connect(
        f"file:{tmp_path / 'tutor.db'}?mode=ro",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
    )  # as if opened while the file was immutable
    with pytest.raises(StoreError, match="readonly"):
        store.get_or_create_learner("ada", now=1.0)
    learner, created = store.get_or_create_learner("ada", now=1.0)
    assert created and isinstance(learner, LearnerRecord)
    assert store.get_learner("ada") is not None
    store.close()


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
