"""Open a store from a URI, the one string deployments and settings carry around."""

from __future__ import annotations

from pathlib import Path

from store.base import TutorStore

DEFAULT_STORE_URI = "sqlite:///var/tutor.db"

_SQLITE_PREFIX = "sqlite:///"
_MONGO_SCHEMES = ("mongodb", "mongodb+srv")


def sqlite_path(uri: str) -> Path:
    """The file a sqlite URI names: sqlite:///rel/path.db (from the cwd) or sqlite:////abs.db.

    Like SQLAlchemy, the third slash ends the (empty) authority, so a fourth one makes the path
    absolute.
    """
    if not uri.startswith(_SQLITE_PREFIX):
        raise ValueError(
            f"bad SQLite store URI {uri!r}: use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    path = uri[len(_SQLITE_PREFIX) :]
    if not path or path.endswith("/"):
        raise ValueError(f"SQLite store URI {uri!r} names no file")
    return Path(path)


def open_store(uri: str, *, timeout_s: float | None = None) -> TutorStore:
    """A SQLiteStore for sqlite:///..., a MongoStore for mongodb:// and mongodb+srv://.

    ``timeout_s``: how long one call may wait for the backend (SQLite's busy timeout, MongoDB's
    server selection timeout) instead of the backend's default; a caller that gives up on a call
    sooner (the ingress, which then journals the write) sets it so a stuck call frees its thread
    about when it is abandoned.
    """
    options = {} if timeout_s is None else {"timeout_s": timeout_s}
    scheme, sep, _ = uri.partition("://")
    if not sep:
        raise ValueError(
            f"store URI {uri!r} has no scheme: expected sqlite:///path or mongodb://host/db"
        )
    # Imported here so a SQLite deployment never needs pymongo importable, and vice versa.
    if scheme == "sqlite":
        from store.sqlite_store import SQLiteStore

        return SQLiteStore(sqlite_path(uri), **options)
    if scheme in _MONGO_SCHEMES:
        from store.mongo_store import MongoStore

        return MongoStore(uri, **options)
    raise ValueError(
        f"unsupported store URI scheme {scheme!r} in {uri!r}: "
        "expected sqlite, mongodb or mongodb+srv"
    )
