"""API keys: made here, shown once, stored only as a hash."""

from __future__ import annotations

import hashlib
import re
import secrets

from store import API_SCOPES, ApiKeyRecord

# A recognisable prefix: secret scanners and people can tell a tutor key in a paste or a log.
KEY_PREFIX = "tutor_"
DEFAULT_RPM = 600
DEFAULT_MAX_CONCURRENT_TURNS = 8
# Names and tenants: no "/" (a tenant prefixes learner ids as "tenant/learner") and nothing a
# shell or a log line would mangle.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def generate_key() -> str:
    """256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """SHA-256 hex of the key. A fast hash is right here: the key is 256 random bits, so no
    dictionary or brute-force search can invert it (password hashes like bcrypt are slow
    because passwords are guessable; these are not), and a lookup per request stays cheap."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(text: str) -> list[str]:
    """``tutor,learners:read`` -> the scopes; ValueError naming an unknown one."""
    scopes = [part.strip() for part in text.split(",") if part.strip()]
    if not scopes:
        raise ValueError(f"give at least one scope of {', '.join(API_SCOPES)}")
    unknown = [scope for scope in scopes if scope not in API_SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}: the scopes are {', '.join(API_SCOPES)}")
    return list(dict.fromkeys(scopes))  # in order, without repeats


def check_name(value: str, what: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError(f"bad {what} {value!r}: 1-64 characters of letters, digits and _ . : -")
    return value


def new_key(
    *,
    name: str,
    scopes: list[str],
    now: float,
    tenant: str | None = None,
    rpm: int = DEFAULT_RPM,
    max_concurrent_turns: int = DEFAULT_MAX_CONCURRENT_TURNS,
) -> tuple[str, ApiKeyRecord]:
    """The key (to show once) and the record to store (its hash, never the key).

    Raises ValueError for a bad name, tenant, scope or limit."""
    check_name(name, "key name")
    if tenant is not None:
        check_name(tenant, "tenant")
    parse_scopes(",".join(scopes))
    key = generate_key()
    record = ApiKeyRecord(
        name=name,
        key_hash=hash_key(key),
        scopes=scopes,
        tenant=tenant,
        rpm=rpm,
        max_concurrent_turns=max_concurrent_turns,
        created_at=now,
    )
    return key, record
