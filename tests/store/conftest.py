"""Backends for the store's contract tests: every test taking `store` runs once per backend."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import TutorStore
from store.mongo_store import MongoStore
from store.sqlite_store import SQLiteStore

MONGODB_URI = os.environ.get("MONGODB_URI")
needs_mongodb = pytest.mark.skipif(
    not MONGODB_URI, reason="set MONGODB_URI to run against a real MongoDB server"
)


def fresh_mongo_db_name() -> str:
    # A database per test keeps runs independent on a shared server; it is dropped afterwards.
    return f"tutor_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("mongomock", id="mongomock"),
        pytest.param("mongodb", id="mongodb", marks=needs_mongodb),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TutorStore]:
    backend: str = request.param
    if backend == "sqlite":
        sqlite = SQLiteStore(tmp_path / "store" / "tutor.db")
        yield sqlite
        sqlite.close()
    elif backend == "mongomock":
        import mongomock

        client = mongomock.MongoClient()
        mock = MongoStore(client=client)
        yield mock
        mock.close()
        client.close()
    else:
        import pymongo

        client = pymongo.MongoClient(MONGODB_URI, serverSelectionTimeoutMS=3000)
        db_name = fresh_mongo_db_name()
        real = MongoStore(client=client, db_name=db_name)
        yield real
        real.close()
        client.drop_database(db_name)
        client.close()
