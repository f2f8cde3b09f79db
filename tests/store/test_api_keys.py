"""API keys in both backends (SQLite and MongoDB through mongomock): the store's contract."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from store import ApiKeyRecord, TutorStore


def _key(name: str, key_hash: str, **fields) -> ApiKeyRecord:
    values = {
        "scopes": ["tutor"],
        "rpm": 600,
        "max_concurrent_turns": 8,
        "created_at": 100.0,
        **fields,
    }
    return ApiKeyRecord(name=name, key_hash=key_hash, **values)


def test_a_key_round_trips_and_is_found_by_its_hash(store: TutorStore) -> None:
    record = _key("web", "a" * 64, scopes=["tutor", "learners:read"], tenant="school-1", rpm=5)
    assert store.add_api_key(record) is True
    assert store.api_key_by_hash("a" * 64) == record
    assert store.api_key_by_hash("b" * 64) is None
    assert store.list_api_keys() == [record]


def test_a_live_name_is_unique_and_free_again_once_revoked(store: TutorStore) -> None:
    assert store.add_api_key(_key("web", "a" * 64))
    assert store.add_api_key(_key("web", "b" * 64)) is False  # nothing changed
    assert store.api_key_by_hash("b" * 64) is None

    assert store.revoke_api_key("web", now=200.0) is True
    assert store.revoke_api_key("web", now=300.0) is False  # no live key of that name now
    revoked = store.api_key_by_hash("a" * 64)
    assert revoked is not None and revoked.revoked_at == pytest.approx(200.0)

    assert store.add_api_key(_key("web", "b" * 64, created_at=250.0))
    assert [(k.name, k.key_hash[0], k.revoked_at) for k in store.list_api_keys()] == [
        ("web", "a", pytest.approx(200.0)),
        ("web", "b", None),
    ]


def test_a_hash_is_stored_once(store: TutorStore) -> None:
    assert store.add_api_key(_key("one", "a" * 64))
    assert store.add_api_key(_key("two", "a" * 64)) is False


def test_revoking_an_unknown_name_changes_nothing(store: TutorStore) -> None:
    assert store.revoke_api_key("nobody", now=1.0) is False
    assert store.list_api_keys() == []


def test_an_unknown_scope_is_refused_by_the_record() -> None:
    with pytest.raises(ValidationError):
        _key("web", "a" * 64, scopes=["root"])
