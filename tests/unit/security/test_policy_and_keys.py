"""Keys, route scopes and the auth mode: pure functions."""

from __future__ import annotations

import pytest

from deployments.security.keys import KEY_PREFIX, hash_key, new_key, parse_scopes
from deployments.security.policy import (
    AuthConfigError,
    auth_enabled,
    is_loopback,
    is_turn,
    required_scope,
)


def test_a_new_key_is_random_prefixed_and_stored_only_as_its_hash():
    key, record = new_key(name="web", scopes=["tutor"], now=1.0)
    other, _ = new_key(name="web", scopes=["tutor"], now=1.0)
    assert key.startswith(KEY_PREFIX) and key != other
    assert len(key) - len(KEY_PREFIX) >= 43  # 32 bytes, base64
    assert record.key_hash == hash_key(key) and len(record.key_hash) == 64
    assert key not in record.model_dump_json()
    assert (record.rpm, record.max_concurrent_turns, record.tenant) == (600, 8, None)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"scopes": ["tutor", "root"]}, "unknown scope 'root'"),
        ({"scopes": []}, "at least one scope"),
        ({"tenant": "a/b"}, "bad tenant"),
        ({"name": "has space"}, "bad key name"),
    ],
)
def test_bad_keys_are_refused(fields, problem):
    with pytest.raises(ValueError, match=problem):
        new_key(**{"name": "web", "scopes": ["tutor"], "now": 1.0, **fields})


def test_scopes_parse_from_a_comma_list():
    assert parse_scopes("tutor, learners:read,tutor") == ["tutor", "learners:read"]


@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/v1/tutor", "tutor"),
        ("/v1/chat/completions", "tutor"),
        ("/v1/models", "tutor"),
        ("/v1/emotion", "tutor"),
        ("/v1/emotion/", "tutor"),  # the emotion application's documented path
        ("/v1/emotion/openapi.json", None),
        ("/v1/emotion/docs", None),
        ("/v1/emotion/anything", "admin"),
        ("/v1/difficulty", "tutor"),
        ("/v1/feedback", "tutor"),
        ("/v1/learners/bob", "learners:read"),
        ("/healthz", None),
        ("/docs", None),
        ("/openapi.json", None),
        ("/v1/keys", "admin"),  # unknown to the table: denied by default
        ("/v1/learners/bob/turns", "admin"),
        ("/v1/tutorx", "admin"),
        ("/", "admin"),
    ],
)
def test_every_route_needs_its_scope_and_unknown_ones_need_admin(path, scope):
    assert required_scope(path) == scope


def test_turns_are_the_tutor_and_chat_routes():
    assert is_turn("/v1/tutor") and is_turn("/v1/chat/completions")
    assert not is_turn("/v1/emotion")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("tutor.example.org", False),
        (None, False),
    ],
)
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("mode", "host", "enabled"),
    [
        ("auto", "127.0.0.1", False),  # make serve on one machine, as before
        ("auto", "0.0.0.0", True),
        ("auto", None, True),  # unknown: secure by default
        ("required", "127.0.0.1", True),
        ("required", "0.0.0.0", True),
        ("off", "127.0.0.1", False),
    ],
)
def test_auth_mode_resolution(mode, host, enabled):
    assert auth_enabled(mode, host) is enabled


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", None])
def test_auth_off_off_loopback_refuses_to_start(host):
    with pytest.raises(AuthConfigError, match="not loopback"):
        auth_enabled("off", host)
