"""Each guardrail rule fires, passes, or waits for data, and says which with its figures."""

import pytest

from deployments.lifecycle.guardrail import judge, verdict
from deployments.lifecycle.metrics_difficulty import score
from deployments.lifecycle.metrics_personalization import PersonalizationMetrics
from deployments.lifecycle.online_metrics import VersionReport, build_report
from deployments.lifecycle.rollout import GuardrailConfig
from deployments.lifecycle.serving_stats import VersionServing
from deployments.lifecycle.stats import mean_estimate, wilson

CONFIG = GuardrailConfig(min_requests=50, min_latency_requests=50, min_labels=100, alpha=0.01)


def serving(requests: int, errors: int, p99_ms: float | None = 100.0) -> VersionServing:
    return VersionServing(
        requests=requests,
        errors=errors,
        error_rate=errors / requests if requests else None,
        error_rate_ci=wilson(errors, requests),
        p50_ms=p99_ms and p99_ms / 4,
        p99_ms=p99_ms,
    )


def version(name: str, **fields) -> VersionReport:
    return VersionReport(version=name, **fields)


def difficulty(p: float, n: int, accuracy: float = 0.7):
    correct = [i < accuracy * n for i in range(n)]
    return score([p] * n, correct, turns=n)


def policy(rewards: list[float]) -> PersonalizationMetrics:
    return PersonalizationMetrics(
        turns=len(rewards), rewards=len(rewards), mean_reward=mean_estimate(rewards)
    )


def test_an_error_rate_past_the_margin_rolls_back_and_says_so():
    result = judge(
        version("v2", serving=serving(1000, 10)), version("v3", serving=serving(120, 10)), CONFIG
    )
    assert result.rollback
    assert result.reasons[0].startswith(
        "canary v3 error rate 0.083 > champion 0.010 + 0.02 over 120 requests"
    )
    assert any(c.startswith("canary v3 p99 latency 100 ms <=") for c in result.checked)


def test_an_error_rate_within_the_margin_passes():
    result = judge(
        version("v2", serving=serving(1000, 10)), version("v3", serving=serving(100, 2)), CONFIG
    )
    assert not result.rollback and result.reasons == []
    assert any("error rate 0.020 <= champion 0.010 + 0.02" in c for c in result.checked)


def test_few_requests_skip_the_serving_rules_whatever_they_show():
    result = judge(
        version("v2", serving=serving(1000, 0)),
        version("v3", serving=serving(20, 20, p99_ms=60_000)),
        CONFIG,
    )
    assert not result.rollback and result.checked == []
    assert result.skipped == [
        "error rate: canary v3 has 20 requests; needs 50 each",
        "p99 latency: canary v3 has 20 requests; needs 50 each",
    ]


def test_a_slow_p99_rolls_back_and_a_tolerable_one_passes():
    champion = version("v2", serving=serving(500, 0, p99_ms=100))
    slow = judge(champion, version("v3", serving=serving(60, 0, p99_ms=250)), CONFIG)
    assert slow.rollback
    assert slow.reasons == [
        "canary v3 p99 latency 250 ms > champion 100 ms x 2 (and + 50 ms) over 60 requests "
        "(champion 500)"
    ]
    fine = judge(champion, version("v3", serving=serving(60, 0, p99_ms=200)), CONFIG)
    assert not fine.rollback


def test_a_p99_past_a_minute_rolls_back():
    result = judge(
        version("v2", serving=serving(500, 0, p99_ms=100)),
        version("v3", serving=serving(60, 0, p99_ms=float("inf"))),
        CONFIG,
    )
    assert result.rollback and "p99 latency inf ms" in result.reasons[0]


def test_a_significantly_worse_log_loss_rolls_back():
    result = judge(
        version("v1", served=difficulty(0.7, 400)),
        version("v2", served=difficulty(0.3, 150)),
        CONFIG,
    )
    assert result.rollback
    (reason,) = result.reasons
    # 0.7 * -ln 0.3 + 0.3 * -ln 0.7 = 0.950 against 0.7 * -ln 0.7 + 0.3 * -ln 0.3 = 0.611.
    assert reason.startswith(
        "canary v2 log-loss 0.950 vs champion 0.611 over 150 and 400 labels: Welch one-sided p = "
    )
    assert reason.endswith("< alpha 0.01")
    assert result.skipped == [
        "error rate: canary v2 has 0 requests, champion v1 has 0 requests; needs 50 each",
        "p99 latency: canary v2 has 0 requests, champion v1 has 0 requests; needs 50 each",
    ]


def test_a_log_loss_worse_by_noise_does_not_roll_back():
    result = judge(
        version("v1", served=difficulty(0.70, 400)),
        version("v2", served=difficulty(0.68, 150)),
        CONFIG,
    )
    assert not result.rollback
    assert any(c.startswith("canary v2 log-loss") and ">= alpha 0.01" in c for c in result.checked)


def test_log_loss_waits_for_enough_labels():
    result = judge(
        version("v1", served=difficulty(0.7, 400)),
        version("v2", served=difficulty(0.01, 99)),
        CONFIG,
    )
    assert not result.rollback
    assert "log-loss: canary v2 has 99 labels; needs 100 each" in result.skipped


def test_a_significantly_lower_reward_rolls_back():
    champion = version("v1", served=policy([1.0, 1.0, 1.0, 0.0] * 50))
    worse = judge(champion, version("v2", served=policy([1.0, 0.0, 0.0, 0.0] * 30)), CONFIG)
    assert worse.rollback
    assert worse.reasons[0].startswith("canary v2 mean reward 0.250 vs champion 0.750")
    same = judge(champion, version("v2", served=policy([1.0, 1.0, 0.0, 1.0] * 30)), CONFIG)
    assert not same.rollback and any("mean reward" in c for c in same.checked)
    few = judge(champion, version("v2", served=policy([0.0] * 40)), CONFIG)
    assert not few.rollback
    assert few.skipped[-1] == "mean reward: canary v2 has 40 rewards; needs 100 each"


def test_a_disabled_guardrail_never_rolls_back():
    result = judge(
        version("v2", serving=serving(1000, 0)),
        version("v3", serving=serving(1000, 1000)),
        GuardrailConfig(enabled=False),
    )
    assert (result.rollback, result.skipped) == (False, ["guardrail disabled"])


def test_verdict_on_a_report_without_the_canary_yet():
    report = build_report("emotion", turns=[], answers=[])
    result = verdict(report=report, champion="v3", canary="v4", config=CONFIG)
    assert not result.rollback and (result.champion, result.canary) == ("v3", "v4")
    assert len(result.skipped) == 2  # emotion has no outcome rule: only the serving ones


@pytest.mark.parametrize("alpha", [0.2, 1e-12])
def test_alpha_sets_how_sure_the_outcome_rule_must_be(alpha):
    result = judge(
        version("v1", served=difficulty(0.70, 400)),
        version("v2", served=difficulty(0.60, 150)),
        GuardrailConfig(min_labels=100, alpha=alpha),
    )
    assert result.rollback is (alpha == 0.2)


def test_an_early_difficulty_canary_lists_log_loss_as_waiting_for_labels():
    report = build_report("difficulty", turns=[], answers=[])
    result = verdict(report=report, champion="v1", canary="v2", config=CONFIG)
    assert not result.rollback
    assert result.skipped[-1] == (
        "log-loss: canary v2 has 0 labels, champion v1 has 0 labels; needs 100 each"
    )


def test_a_cold_start_in_a_small_sample_is_not_a_slow_canary():
    """Seen in `make lifecycle-replay`: a policy canary's p99 of 50 ms against the champion's
    20 ms over 111 requests (its first calls read the statistics): ratio 2.5, but 30 ms."""
    champion = version("v1", serving=serving(600, 0, p99_ms=20))
    assert not judge(champion, version("v2", serving=serving(600, 0, p99_ms=50)), CONFIG).rollback
    small = judge(champion, version("v2", serving=serving(111, 0, p99_ms=500)), GuardrailConfig())
    assert not small.rollback and any("needs 500 each" in s for s in small.skipped)


def test_a_few_errors_past_the_margin_are_not_enough_without_significance():
    champion = version("v2", serving=serving(60, 0))
    two_errors = judge(champion, version("v3", serving=serving(60, 2)), CONFIG)  # 0.033 > 0.02
    assert not two_errors.rollback and "p = " in two_errors.checked[0]
