"""Store URIs: which backend, and which file, a URI names."""

from __future__ import annotations

from pathlib import Path

import pytest

import store.factory as factory
from store import DEFAULT_STORE_URI, open_store
from store.sqlite_store import SQLiteStore


def test_default_uri_is_relative_sqlite() -> None:
    assert DEFAULT_STORE_URI == "sqlite:///var/tutor.db"
    assert factory.sqlite_path(DEFAULT_STORE_URI) == Path("var/tutor.db")


def test_relative_sqlite_uri_resolves_from_cwd(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    opened = open_store("sqlite:///data/sub/tutor.db")
    try:
        assert isinstance(opened, SQLiteStore)
        opened.ping()
        assert (tmp_path / "data" / "sub" / "tutor.db").is_file()
    finally:
        opened.close()


def test_absolute_sqlite_uri(tmp_path: Path) -> None:
    target = tmp_path / "abs" / "tutor.db"
    assert str(target).startswith("/")
    uri = f"sqlite:///{target}"  # four slashes: the path keeps its leading one
    assert uri.startswith("sqlite:////")
    assert factory.sqlite_path(uri) == target
    opened = open_store(uri)
    try:
        assert isinstance(opened, SQLiteStore)
        assert target.is_file()
    finally:
        opened.close()


@pytest.mark.parametrize(
    "uri", ["mongodb://localhost:27017/tutor", "mongodb+srv://cluster.example.net/tutor"]
)
def test_mongodb_uris_open_a_mongo_store(uri: str, monkeypatch) -> None:
    seen: list[str] = []

    class FakeMongoStore:
        def __init__(self, given: str) -> None:
            seen.append(given)

    # No server here: only the dispatch is under test, not the connection.
    monkeypatch.setattr("store.mongo_store.MongoStore", FakeMongoStore)
    assert isinstance(open_store(uri), FakeMongoStore)
    assert seen == [uri]


@pytest.mark.parametrize(
    ("uri", "names"),
    [
        ("postgresql://localhost/tutor", "'postgresql'"),
        ("redis://localhost", "'redis'"),
        ("SQLITE:///x.db", "'SQLITE'"),
    ],
)
def test_bad_scheme_is_named(uri: str, names: str) -> None:
    with pytest.raises(ValueError, match="scheme") as info:
        open_store(uri)
    assert names in str(info.value)


@pytest.mark.parametrize("uri", ["", "var/tutor.db", "sqlite:var/tutor.db"])
def test_uri_without_scheme(uri: str) -> None:
    with pytest.raises(ValueError, match="no scheme"):
        open_store(uri)


@pytest.mark.parametrize("uri", ["sqlite://var/tutor.db", "sqlite:///", "sqlite:///var/"])
def test_malformed_sqlite_uri(uri: str) -> None:
    with pytest.raises(ValueError):
        open_store(uri)
