"""The router (``models.llm.router``, no Serve) against a loopback OpenAI-compatible stub with
injected faults."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from deployments.llm_router import LLMRouterDeployment
from models.llm.config import RouterConfig
from models.llm.prompts import ReplyContext
from models.llm.router import ProviderRouter
from tests.support.llm_stub import RunningStub

SECRET = "sk-test-never-in-logs-0123456789"


@pytest.fixture(scope="module")
def running():
    server = RunningStub()
    yield server
    server.stop()


@pytest.fixture
def stub(running):
    running.stub.behaviours.clear()
    running.stub.requests.clear()
    return running.stub


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("STUB_KEY", SECRET)


def _configured(config: dict, **kwargs) -> ProviderRouter:
    return ProviderRouter(
        RouterConfig.model_validate(config), http_client=httpx.AsyncClient(), **kwargs
    )


def _router(stub, names, **config) -> ProviderRouter:
    providers = [
        {
            "name": name,
            "base_url": stub.url(name),
            "model": f"model-{name}",
            "api_key_env": "STUB_KEY",
            "timeout_s": 0.5,
            "priority": i,
        }
        for i, name in enumerate(names)
    ]
    return _configured({"providers": providers, **config})


def _context(**overrides) -> ReplyContext:
    return ReplyContext(
        **{"message": "why is 1/2 > 1/3?", "strategy": "hint", "emotion_state": "neutral"}
        | overrides
    )


async def _events(router, **overrides) -> list[dict]:
    return [event async for event in router.stream(_context(**overrides))]


def _outcomes(llm) -> list[tuple[str, str]]:
    return [(a.provider, a.outcome) for a in llm.attempts]


async def test_fallback_to_the_next_provider_before_the_first_token(stub, key):
    stub.behave("a", "error")
    stub.behave("b", text="Think of pizza slices.")
    text, llm, error = await _router(stub, ["a", "b"]).respond(_context())
    assert (text, llm.provider, llm.model, error) == (
        "Think of pizza slices.",
        "b",
        "model-b",
        None,
    )
    assert _outcomes(llm) == [("a", "error"), ("b", "ok")]


async def test_rate_limit_opens_the_breaker_for_retry_after(stub, key):
    stub.behave("a", "rate_limit", retry_after=30)
    router = _router(stub, ["a"])
    _, first, _ = await router.respond(_context())
    assert _outcomes(first) == [("a", "rate_limited"), ("offline", "ok")]
    _, second, _ = await router.respond(_context())
    assert _outcomes(second) == [("a", "circuit_open"), ("offline", "ok")]
    assert second.attempts[0].detail in ("retry in 30.0s", "retry in 29.9s")
    assert stub.calls("a") == 1  # not asked again before its Retry-After


async def test_breaker_opens_after_repeated_failures_then_a_probe_closes_it(stub, key):
    stub.behave("a", "error")
    router = _router(stub, ["a"], breaker_failure_threshold=3, breaker_cooldown_s=0.3)
    for _ in range(3):
        await router.respond(_context())
    _, skipped, _ = await router.respond(_context())
    assert _outcomes(skipped) == [("a", "circuit_open"), ("offline", "ok")]
    assert stub.calls("a") == 3
    assert router.provider_states()["a"].breaker == "open"

    stub.behave("a", text="I am back.")
    await asyncio.sleep(0.35)
    text, probe, _ = await router.respond(_context())
    assert (text, _outcomes(probe)) == ("I am back.", [("a", "ok")])
    assert router.provider_states()["a"].breaker == "closed"


async def test_a_failing_provider_is_ranked_after_a_healthy_one(stub, key):
    stub.behave("a", "error")
    router = _router(stub, ["a", "b"])
    _, first, _ = await router.respond(_context())
    _, second, _ = await router.respond(_context())
    assert _outcomes(first) == [("a", "error"), ("b", "ok")]
    assert _outcomes(second) == [("b", "ok")]  # a's error rate moved it behind b


async def test_attempts_are_capped_then_the_offline_responder_answers(stub, key):
    for name in "abcd":
        stub.behave(name, "error")
    text, llm, _ = await _router(stub, list("abcd"), max_attempts=2).respond(_context())
    assert _outcomes(llm) == [("a", "error"), ("b", "error"), ("offline", "ok")]
    assert (stub.calls("c"), stub.calls("d")) == (0, 0)
    assert "offline" in text.lower()


async def test_a_transient_error_is_retried_after_the_other_providers(stub, key):
    stub.behave("a", "error", times=1, text="a, second time lucky")
    stub.behave("b", "rate_limit")
    text, llm, _ = await _router(stub, ["a", "b"]).respond(_context())
    assert _outcomes(llm) == [("a", "error"), ("b", "rate_limited"), ("a", "ok")]
    assert text == "a, second time lucky"


async def test_timeouts_rate_limits_and_rejections_are_not_retried(stub, key):
    stub.behave("a", "ok", delay_s=2.0)
    stub.behave("b", "rate_limit")
    stub.behave("c", "reject")
    _, llm, _ = await _router(stub, ["a", "b", "c"], max_attempts=5).respond(_context())
    assert _outcomes(llm) == [
        ("a", "timeout"),
        ("b", "rate_limited"),
        ("c", "rejected"),
        ("offline", "ok"),
    ]
    assert [stub.calls(name) for name in "abc"] == [1, 1, 1]


async def test_a_drop_mid_stream_ends_with_an_error_and_no_second_provider(stub, key):
    stub.behave("a", "drop", text="one two three four")
    stub.behave("b", text="completely different reply")
    events = await _events(_router(stub, ["a", "b"]))
    tokens = [e["text"] for e in events if e["type"] == "token"]
    assert tokens == ["one ", "two "]  # what a sent, once, and nothing of b
    assert events[-1]["type"] == "error"
    assert _outcomes(events[-1]["llm"]) == [("a", "error")]
    assert stub.calls("b") == 0


async def test_a_stalled_first_token_times_out_and_falls_back(stub, key):
    stub.behave("a", "ok", delay_s=2.0)
    text, llm, _ = await _router(stub, ["a", "b"]).respond(_context())
    assert _outcomes(llm) == [("a", "timeout"), ("b", "ok")]
    assert llm.attempts[0].latency_ms < 1500


async def test_a_stall_mid_stream_times_out_with_an_error_and_no_second_provider(stub, key):
    stub.behave("a", "stall_mid", text="one two three four", delay_s=2.0)
    events = await _events(_router(stub, ["a", "b"]))
    assert [e["text"] for e in events if e["type"] == "token"] == ["one ", "two "]
    assert events[-1]["type"] == "error"
    assert _outcomes(events[-1]["llm"]) == [("a", "timeout")]
    assert stub.calls("b") == 0


async def test_a_slow_first_token_answers_then_ranks_the_provider_down(stub, key):
    stub.behave("a", "ok", text="slow but sure", delay_s=1.2)
    router = _configured(
        {
            "providers": [
                {"name": n, "base_url": stub.url(n), "model": "m", "api_key_env": "STUB_KEY",
                 "timeout_s": 3.0, "priority": i}
                for i, n in enumerate("ab")
            ]
        }
    )  # fmt: skip
    text, slow, _ = await router.respond(_context())
    assert (text, _outcomes(slow)) == ("slow but sure", [("a", "ok")])  # slow is not a failure
    state = router.provider_states()["a"]
    assert (state.breaker, state.error_rate) == ("closed", 0.0)
    assert state.ttft_ms >= 1200
    # Its observed 1.2 s is now worse than b's 1 s prior: b goes first.
    _, after, _ = await router.respond(_context())
    assert _outcomes(after) == [("b", "ok")]


async def test_a_missing_key_skips_the_provider(stub, monkeypatch):
    monkeypatch.delenv("STUB_KEY", raising=False)
    _, llm, _ = await _router(stub, ["a"]).respond(_context())
    assert _outcomes(llm) == [("a", "not_configured"), ("offline", "ok")]
    assert stub.calls("a") == 0


async def test_the_client_priority_picks_the_provider(stub, key):
    router = _configured(
        {
            "providers": [
                {"name": "strong", "base_url": stub.url("strong"), "model": "big",
                 "api_key_env": "STUB_KEY", "tags": ["strong"], "cost_per_1k_output": 10.0},
                {"name": "fast", "base_url": stub.url("fast"), "model": "small",
                 "api_key_env": "STUB_KEY", "tags": ["fast"], "cost_per_1k_output": 0.1},
            ]
        }
    )  # fmt: skip
    _, quick, _ = await router.respond(_context(priority="speed"))
    _, careful, _ = await router.respond(_context(priority="quality"))
    assert (quick.provider, careful.provider) == ("fast", "strong")


async def test_keys_reach_the_provider_and_never_the_logs(stub, key, caplog):
    stub.behave("a", "error")
    stub.behave("b", "drop", text="one two three")
    caplog.set_level(logging.DEBUG)
    events = await _events(_router(stub, ["a", "b"]))
    assert {r["headers"]["authorization"] for r in stub.requests} == {f"Bearer {SECRET}"}
    assert SECRET not in caplog.text
    assert SECRET not in repr(events)


def test_tutor_providers_file_replaces_the_configured_list(tmp_path, monkeypatch):
    path = tmp_path / "providers.yaml"
    path.write_text(
        "providers:\n  - {name: local, base_url: 'http://127.0.0.1:1/v1', model: m, priority: 1}\n"
    )
    monkeypatch.setenv("TUTOR_PROVIDERS", str(path))
    router = LLMRouterDeployment(http_client=httpx.AsyncClient())
    router.reconfigure({"providers": [{"name": "x", "base_url": "http://x/v1", "model": "m"}]})
    assert list(router.provider_states()) == ["local"]
    path.write_text("not: a providers list\n")
    with pytest.raises(ValueError, match="providers"):
        router.reconfigure({})


class _RecordedMetrics:
    def __init__(self):
        self.calls, self.breakers = [], {}

    def record_call(self, provider, outcome, **values):
        self.calls.append((provider, outcome, values))

    def record_breaker(self, provider, state):
        self.breakers[provider] = state


def _priced(stub, names, **provider) -> list[dict]:
    return [
        {"name": n, "base_url": stub.url(n), "model": "m", "api_key_env": "STUB_KEY",
         "cost_per_1k_input": 1.0, "cost_per_1k_output": 2.0, "priority": i, **provider}
        for i, n in enumerate(names)
    ]  # fmt: skip


async def test_metrics_per_provider(stub, key):
    stub.behave("a", "error")
    stub.behave("b", text="a reply of six words here")
    metrics = _RecordedMetrics()
    router = _configured(
        {"breaker_failure_threshold": 1, "providers": _priced(stub, "ab")}, observer=metrics
    )
    _, llm, _ = await router.respond(_context())
    (a, a_outcome, a_values), (b, b_outcome, b_values) = metrics.calls
    assert (a, a_outcome, b, b_outcome) == ("a", "error", "b", "ok")
    assert a_values == {"ttft_ms": None, "usage": None}  # failed before any text: not billed
    assert b_values["ttft_ms"] > 0
    assert b_values["usage"] == llm.usage
    assert metrics.breakers == {"a": "open", "b": "closed"}


async def test_usage_is_the_providers_count_and_priced(stub, key):
    stub.behave("a", text="a reply of six words here")
    router = _configured({"providers": _priced(stub, "a")})
    _, llm, _ = await router.respond(_context())
    sent = stub.requests[-1]["body"]
    assert sent["stream_options"] == {"include_usage": True}
    prompt_words = sum(len(m["content"].split()) for m in sent["messages"])
    usage = llm.usage
    assert (usage.counted_by, usage.input_tokens, usage.output_tokens) == (
        "provider",
        prompt_words,
        6,
    )
    assert usage.cost == pytest.approx(prompt_words / 1000 * 1.0 + 6 / 1000 * 2.0)


async def test_usage_is_estimated_for_a_provider_asked_for_none(stub, key):
    stub.behave("a", text="a reply of some twenty-eight characters")
    router = _configured({"providers": _priced(stub, "a", request_usage=False)})
    _, llm, _ = await router.respond(_context())
    assert "stream_options" not in stub.requests[-1]["body"]
    assert llm.usage.counted_by == "estimate"
    assert llm.usage.output_tokens == len("a reply of some twenty-eight characters") // 4
