"""The router's decisions without any network: circuit breaker states and provider ranking."""

from __future__ import annotations

from models.llm.circuit_breaker import BreakerConfig, BreakerState, CircuitBreaker
from models.llm.routing import ProviderHealth, ProviderProfile, TurnNeeds, rank_providers


def _breaker() -> CircuitBreaker:
    return CircuitBreaker(BreakerConfig(failure_threshold=3, cooldown_s=10.0))


def test_breaker_opens_after_repeated_failures_and_closes_after_a_good_probe():
    breaker = _breaker()
    for t in range(2):
        assert breaker.allow(float(t))
        breaker.record_failure(float(t))
    assert breaker.state(2.0) is BreakerState.CLOSED  # two failures are not yet a pattern
    breaker.record_failure(2.0)
    assert breaker.state(2.0) is BreakerState.OPEN
    assert not breaker.allow(11.9)
    # After the cooldown exactly one probe goes through.
    assert breaker.state(12.0) is BreakerState.HALF_OPEN
    assert breaker.allow(12.0)
    assert not breaker.allow(12.1)
    breaker.record_success()
    assert breaker.state(12.2) is BreakerState.CLOSED and breaker.allow(12.2)


def test_a_failed_probe_opens_the_breaker_for_another_cooldown():
    breaker = _breaker()
    for t in range(3):
        breaker.record_failure(float(t))
    assert breaker.allow(12.0)  # the probe
    breaker.record_failure(12.5)
    assert breaker.state(22.4) is BreakerState.OPEN
    assert breaker.allow(22.5)


def test_retry_after_opens_at_once_for_as_long_as_the_provider_asked():
    breaker = _breaker()
    breaker.record_failure(0.0, retry_after_s=42.0)
    assert breaker.state(41.9) is BreakerState.OPEN
    assert breaker.retry_in(30.0) == 12.0
    assert breaker.allow(42.0)
    # A silly Retry-After is capped.
    capped = _breaker()
    capped.record_failure(0.0, retry_after_s=1e9)
    assert capped.allow(BreakerConfig().max_retry_after_s)


def test_a_success_resets_the_failure_count():
    breaker = _breaker()
    breaker.record_failure(0.0)
    breaker.record_failure(1.0)
    breaker.record_success()
    breaker.record_failure(2.0)
    breaker.record_failure(3.0)
    assert breaker.state(3.0) is BreakerState.CLOSED


FAST = ProviderProfile("fast", frozenset({"fast"}), 0.05, 0.1, priority=1)
STRONG = ProviderProfile("strong", frozenset({"strong"}), 2.5, 10.0, priority=2)


def _order(needs: TurnNeeds, health=None) -> list[str]:
    return [r.name for r in rank_providers([FAST, STRONG], health or {}, needs)]


def test_priority_and_the_turn_decide_between_fast_and_strong():
    assert _order(TurnNeeds(priority="speed")) == ["fast", "strong"]
    assert _order(TurnNeeds(priority="quality")) == ["strong", "fast"]
    # A Socratic turn on a hard exercise asks for reasoning even when balanced...
    assert _order(TurnNeeds(strategy="socratic", p_correct=0.3)) == ["strong", "fast"]
    # ...and a frustrated learner asks for speed.
    assert _order(TurnNeeds(strategy="hint", emotion_state="frustrated")) == ["fast", "strong"]


def test_observed_errors_and_latency_demote_a_provider():
    failing = ProviderHealth()
    for _ in range(10):
        failing.record(ok=False)
    assert _order(TurnNeeds(priority="quality"), {"strong": failing}) == ["fast", "strong"]
    slow = ProviderHealth()
    slow.record(ok=True, ttft_ms=5000.0)
    needs = TurnNeeds(priority="quality", max_latency_ms=2000)
    assert _order(needs, {"strong": slow}) == ["fast", "strong"]


def test_ties_go_to_the_configured_priority():
    twin_a = ProviderProfile("a", priority=5)
    twin_b = ProviderProfile("b", priority=1)
    ranked = rank_providers([twin_a, twin_b], {}, TurnNeeds())
    assert [r.name for r in ranked] == ["b", "a"]
