"""A circuit breaker per LLM provider: stop calling a provider that keeps failing.

closed: calls go through; ``failure_threshold`` failures in a row open it.
open: no calls until the cooldown (or the provider's ``Retry-After``, when longer) has passed.
half_open: exactly one probe goes through; its success closes the breaker, its failure opens it
again for another cooldown.

Time is passed in (``now``, monotonic seconds) so the states can be tested without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    failure_threshold: int = 3
    cooldown_s: float = 30.0
    max_retry_after_s: float = 600.0  # a provider's Retry-After is honoured up to this


class CircuitBreaker:
    def __init__(self, config: BreakerConfig | None = None) -> None:
        self.config = config or BreakerConfig()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._open_until = 0.0
        self._probe_in_flight = False

    def state(self, now: float) -> BreakerState:
        if self._state is BreakerState.OPEN and now >= self._open_until:
            return BreakerState.HALF_OPEN
        return self._state

    def retry_in(self, now: float) -> float:
        """Seconds until the breaker lets a probe through (0 when it would now)."""
        return max(0.0, self._open_until - now) if self._state is BreakerState.OPEN else 0.0

    def allow(self, now: float) -> bool:
        """Whether a call may go to the provider now; a granted half-open call is the probe."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self._probe_in_flight:
            return False
        self._state = BreakerState.HALF_OPEN
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._probe_in_flight = False

    def record_failure(self, now: float, retry_after_s: float | None = None) -> None:
        """A failed call; ``retry_after_s`` (from a 429 or 503) opens the breaker at once."""
        self._failures += 1
        was_probe = self._probe_in_flight
        self._probe_in_flight = False
        if retry_after_s is not None and retry_after_s > 0:
            # The provider said when to come back: believe it (capped), even on a first failure.
            wait = min(retry_after_s, self.config.max_retry_after_s)
            self._open(now, max(wait, self.config.cooldown_s) if was_probe else wait)
        elif was_probe or self._failures >= self.config.failure_threshold:
            self._open(now, self.config.cooldown_s)

    def release_probe(self) -> None:
        """A probe that ended without telling anything (the client went away): let another."""
        self._probe_in_flight = False

    def _open(self, now: float, seconds: float) -> None:
        self._state = BreakerState.OPEN
        self._open_until = max(self._open_until, now + seconds)
