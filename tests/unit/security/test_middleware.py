"""The security middleware over HTTP (httpx's ASGI transport): 401, 403, 429, 413, 503."""

from __future__ import annotations

import asyncio

import pytest

from deployments.security.gate import Gate, KeyCache
from deployments.security.keys import hash_key
from store import StoreError
from tests.unit.security.conftest import SETTINGS, App, bearer


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["request_id"] == "req-1"
    return error


async def test_no_key_and_a_bad_key_are_401_with_www_authenticate(app, add_key):
    add_key()
    response = await app.client.post("/v1/tutor", json={})
    _error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    response = await app.client.post("/v1/tutor", json={}, headers=bearer("tutor_nope"))
    assert "unknown or revoked" in _error(response, 401, "unauthorized")["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    _error(await app.client.post("/v1/tutor", json={}, headers=basic), 401, "unauthorized")


async def test_a_key_without_the_scope_is_403_and_with_it_200(app, add_key):
    tutor_only = add_key("web")
    reader = add_key("dash", scopes=("learners:read",))
    response = await app.client.get("/v1/learners/bob", headers=bearer(tutor_only))
    assert "learners:read" in _error(response, 403, "forbidden")["message"]
    response = await app.client.get("/v1/learners/bob", headers=bearer(reader))
    assert response.status_code == 200
    response = await app.client.post("/v1/tutor", json={}, headers=bearer(tutor_only))
    assert response.json() == {"bytes": 2, "key": "web"}


async def test_health_is_open(app):
    assert (await app.client.get("/healthz")).status_code == 200


async def test_a_revoked_key_is_401_once_the_cache_entry_expires(store, add_key):
    now = [0.0]
    gate = Gate(store, enabled=True, settings=SETTINGS, clock=lambda: now[0])
    served = App(gate)
    key = add_key()
    assert (await served.client.post("/v1/tutor", headers=bearer(key))).status_code == 200
    store.revoke_api_key("web", now=1.0)
    now[0] = SETTINGS.key_cache_ttl_s - 0.5  # still cached: allowed, as the TTL promises
    assert (await served.client.post("/v1/tutor", headers=bearer(key))).status_code == 200
    now[0] = SETTINGS.key_cache_ttl_s + 0.5
    _error(await served.client.post("/v1/tutor", headers=bearer(key)), 401, "unauthorized")


async def test_past_the_keys_rpm_is_429_with_retry_after(app, add_key):
    key = add_key(rpm=2)
    for _ in range(2):
        assert (await app.client.post("/v1/tutor", headers=bearer(key))).status_code == 200
    response = await app.client.post("/v1/tutor", headers=bearer(key))
    _error(response, 429, "rate_limited")
    assert 1 <= int(response.headers["retry-after"]) <= 60
    other = add_key("other", rpm=2)  # per key: another key is not limited by the first
    assert (await app.client.post("/v1/tutor", headers=bearer(other))).status_code == 200


async def test_concurrent_turns_past_the_keys_limit_are_429(app, add_key):
    key = add_key(max_concurrent_turns=2)
    app.release.clear()
    held = [asyncio.create_task(app.client.post("/v1/tutor", headers=bearer(key))) for _ in "ab"]
    await asyncio.sleep(0.05)
    response = await app.client.post("/v1/tutor", headers=bearer(key))
    assert "turns at work" in _error(response, 429, "rate_limited")["message"]
    assert response.headers["retry-after"] == "1"
    app.release.set()
    assert [(await task).status_code for task in held] == [200, 200]
    assert (await app.client.post("/v1/tutor", headers=bearer(key))).status_code == 200


async def test_a_streamed_turn_holds_its_place_until_the_stream_ends(app, add_key):
    key = add_key(max_concurrent_turns=1)
    app.release.clear()
    streaming = asyncio.create_task(app.client.post("/v1/chat/completions", headers=bearer(key)))
    await asyncio.sleep(0.05)
    _error(await app.client.post("/v1/tutor", headers=bearer(key)), 429, "rate_limited")
    app.release.set()
    assert (await streaming).text.endswith("data: [DONE]\n\n")
    assert (await app.client.post("/v1/tutor", headers=bearer(key))).status_code == 200


async def test_a_declared_body_past_the_limit_is_413_before_parsing(app, add_key):
    key = add_key()
    not_json = b"{" * (SETTINGS.max_body_bytes + 1)
    response = await app.client.post("/v1/tutor", content=not_json, headers=bearer(key))
    assert str(SETTINGS.max_body_bytes) in _error(response, 413, "payload_too_large")["message"]
    # Before the key too: a too-large body is refused without any store lookup.
    _error(await app.client.post("/v1/tutor", content=not_json), 413, "payload_too_large")


async def test_a_chunked_body_is_counted_as_it_streams_in(app, add_key):
    key = add_key()

    async def chunks(total: int):
        for _ in range(total // 512):
            yield b"x" * 512

    big = await app.client.post("/v1/tutor", content=chunks(4096), headers=bearer(key))
    _error(big, 413, "payload_too_large")
    small = await app.client.post("/v1/tutor", content=chunks(1024), headers=bearer(key))
    assert small.json() == {"bytes": 1024, "key": "web"}


async def test_a_store_that_cannot_answer_is_503_not_401(store, add_key):
    key = add_key()

    class Down:
        def api_key_by_hash(self, key_hash):
            raise StoreError("database is locked")

    served = App(Gate(Down(), enabled=True, settings=SETTINGS))
    response = await served.client.post("/v1/tutor", headers=bearer(key))
    assert "store is unavailable" in _error(response, 503, "unavailable")["message"]


async def test_with_auth_off_no_key_is_needed_but_the_body_limit_holds(store):
    served = App(Gate(store, enabled=False, settings=SETTINGS))
    assert (await served.client.post("/v1/tutor", json={})).json() == {"bytes": 2, "key": None}
    big = b"x" * (SETTINGS.max_body_bytes + 1)
    _error(await served.client.post("/v1/tutor", content=big), 413, "payload_too_large")


async def test_without_a_gate_every_route_is_refused():
    served = App(None)  # as a replica whose Ingress has not installed its gate yet
    _error(await served.client.get("/healthz"), 503, "unavailable")


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "bearer"])
async def test_an_empty_bearer_is_401(app, header):
    response = await app.client.post("/v1/tutor", headers={"Authorization": header})
    _error(response, 401, "unauthorized")


async def test_a_key_seen_before_stays_valid_while_the_store_is_away(store, add_key):
    """Turns go on through a store outage: the last known record answers once its cache entry
    is stale and the store cannot be read; a key never seen is still a 503."""
    key, stranger = add_key(), add_key(name="stranger")
    now = [0.0]
    cache = KeyCache(store.api_key_by_hash, ttl_s=5.0, clock=lambda: now[0])
    record = await cache.get(hash_key(key))
    assert record is not None and record.name == "web"

    def down(key_hash):
        raise StoreError("database is locked")

    cache._lookup = down
    now[0] = 60.0  # long past the TTL
    assert (await cache.get(hash_key(key))) == record
    with pytest.raises(StoreError):
        await cache.get(hash_key(stranger))
