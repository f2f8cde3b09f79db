"""The per-request decisions, in order: who is calling (401), may they (403), how often (429),
how many turns at once (429). Used by ``middleware.SecurityMiddleware``; no HTTP in here.

Keys are looked up through a short cache (``key_cache_ttl_s``) so the store is not read per
request: a revoked key keeps working for at most that long on a replica that cached it.
Rate limits are per key and, with the default in-memory storage, per Ingress replica (N
replicas allow up to N x rpm); a shared ``limits`` storage (redis://, mongodb://) makes the
bound global. Concurrent turns are counted per replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from deployments.security.keys import hash_key
from deployments.security.policy import is_turn, required_scope
from deployments.security.tenancy import Principal
from store import ApiKeyRecord, StoreError, TutorStore

logger = logging.getLogger("ray.serve")
MAX_CACHED_KEYS = 10_000  # unknown keys are cached too: a flood of bad keys cannot reach the store


class Refusal(Exception):
    """A request refused before it reaches a route, with its status and error code."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class GateSettings:
    max_body_bytes: int = 1 << 20
    key_cache_ttl_s: float = 5.0
    rate_limit_storage_uri: str = "memory://"


class KeyCache:
    """Key hash -> its record (or None: unknown) for ``ttl_s`` seconds."""

    def __init__(
        self,
        lookup: Callable[[str], ApiKeyRecord | None],
        *,
        ttl_s: float,
        lookup_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self.ttl_s = ttl_s
        self._clock = clock
        self.lookup_timeout_s = lookup_timeout_s
        self._entries: dict[str, tuple[float, ApiKeyRecord | None]] = {}

    async def get(self, key_hash: str) -> ApiKeyRecord | None:
        """Raises StoreError when the store cannot be read and nothing was ever cached for the
        key. A key seen before keeps its last known record while the store is away (so turns go
        on being answered through a store outage; a revocation then waits for the store)."""
        now = self._clock()
        cached = self._entries.get(key_hash)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            async with asyncio.timeout(self.lookup_timeout_s):  # (a cancellation stays one)
                record = await asyncio.to_thread(self._lookup, key_hash)
        except Exception as exc:  # any backend's failure (a lock, a lost server, a timeout)
            if cached is None:
                raise StoreError(f"API key lookup failed: {type(exc).__name__}") from exc
            return cached[1]  # stale if error; looked up again on the next request
        if len(self._entries) >= MAX_CACHED_KEYS:
            self._entries = {h: e for h, e in self._entries.items() if e[0] > now}
            while len(self._entries) >= MAX_CACHED_KEYS:  # all live: drop the oldest
                self._entries.pop(next(iter(self._entries)))
        self._entries[key_hash] = (now + self.ttl_s, record)
        return record


def limits_storage_uri(uri: str) -> str:
    """The ``limits`` library's async flavour of a storage URI (``memory://`` ->
    ``async+memory://``)."""
    return uri if uri.startswith("async+") else f"async+{uri}"


class Gate:
    def __init__(
        self,
        store: TutorStore,
        *,
        enabled: bool,
        settings: GateSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self._keys = KeyCache(store.api_key_by_hash, ttl_s=5.0, clock=clock)
        self._turns: dict[str, int] = {}
        self._storage_uri: str | None = None
        self.configure(settings or GateSettings())

    def configure(self, settings: GateSettings) -> None:
        self.settings = settings
        self._keys.ttl_s = settings.key_cache_ttl_s
        if settings.rate_limit_storage_uri != self._storage_uri:
            storage = storage_from_string(limits_storage_uri(settings.rate_limit_storage_uri))
            self._limiter = MovingWindowRateLimiter(storage)
            self._storage_uri = settings.rate_limit_storage_uri

    def check_declared_length(self, content_length: str | None) -> None:
        """413 for a declared body past the limit, before a byte of it is read."""
        if content_length is None:
            return
        try:
            declared = int(content_length)
        except ValueError:
            raise Refusal(400, "bad_request", "Content-Length is not a number") from None
        if declared > self.settings.max_body_bytes:
            raise self.too_large()

    def too_large(self) -> Refusal:
        return Refusal(
            413,
            "payload_too_large",
            f"the request body is past the limit of {self.settings.max_body_bytes} bytes",
        )

    async def admit(self, path: str, authorization: str | None) -> Principal | None:
        """The caller of a request to ``path`` (None: auth off, or an open path).

        Raises Refusal: 401 no or an unknown/revoked key, 403 without the scope, 429 past the
        key's requests per minute, 503 when the store cannot say."""
        scope = required_scope(path)
        if not self.enabled or scope is None:
            return None
        record = await self._record(_bearer(authorization))
        principal = Principal(
            name=record.name,
            tenant=record.tenant,
            scopes=frozenset(record.scopes),
            rpm=record.rpm,
            max_concurrent_turns=record.max_concurrent_turns,
        )
        if scope not in principal.scopes:
            raise Refusal(
                403,
                "forbidden",
                f"the key {record.name!r} lacks the scope {scope!r} that {path} needs",
                {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
            )
        await self._count_request(principal)
        return principal

    async def _record(self, key: str) -> ApiKeyRecord:
        try:
            record = await self._keys.get(hash_key(key))
        except StoreError as exc:
            logger.warning("API key lookup failed: the store is unavailable (%s)", type(exc))
            raise Refusal(
                503,
                "unavailable",
                "cannot check the API key: the store is unavailable",
                {"Retry-After": "5"},
            ) from None
        if record is None or record.revoked_at is not None:
            raise Refusal(
                401,
                "unauthorized",
                "unknown or revoked API key",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return record

    async def _count_request(self, principal: Principal) -> None:
        item = RateLimitItemPerMinute(principal.rpm)
        if await self._limiter.hit(item, "key", principal.name):
            return
        stats = await self._limiter.get_window_stats(item, "key", principal.name)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise Refusal(
            429,
            "rate_limited",
            f"the key {principal.name!r} is past its {principal.rpm} requests per minute",
            {"Retry-After": str(retry_after)},
        )

    @contextlib.contextmanager
    def turn_slot(self, principal: Principal | None, path: str) -> Iterator[None]:
        """Held while a turn (its stream included) is at work; 429 past the key's
        max_concurrent_turns."""
        if principal is None or not is_turn(path):
            yield
            return
        name = principal.name
        if self._turns.get(name, 0) >= principal.max_concurrent_turns:
            raise Refusal(
                429,
                "rate_limited",
                f"the key {name!r} has {principal.max_concurrent_turns} turns at work already",
                {"Retry-After": "1"},
            )
        self._turns[name] = self._turns.get(name, 0) + 1
        try:
            yield
        finally:
            self._turns[name] -= 1
            if not self._turns[name]:
                del self._turns[name]


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refusal(
            401,
            "unauthorized",
            "this route needs an API key: send `Authorization: Bearer <key>`",
            {"WWW-Authenticate": "Bearer"},
        )
    return token.strip()
