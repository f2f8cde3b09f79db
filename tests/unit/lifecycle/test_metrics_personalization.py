"""Policy versions judged on their rewards; a shadow policy by inverse propensity scoring."""

import pytest

from deployments.lifecycle import metrics_personalization
from deployments.lifecycle.outcomes import join

from .builders import reward, shadow, turn

V2 = {"personalization": "v2"}


def _turns():
    return [
        turn("a", 1.0, strategy="hint", propensity=0.5),
        turn("b", 2.0, strategy="example", propensity=0.25),
        turn("c", 3.0, versions=V2),
        turn("d", 4.0, versions={"personalization": "unavailable"}),
    ]


def test_rewards_of_both_sources_pool_per_served_version():
    rewards = [
        reward("a", 1.0, source="answer"),
        reward("a", 0.5, source="explicit"),
        reward("b", 0.0, source="answer"),
        reward("c", 1.0),
        reward("d", 1.0),  # a fallback's turn: no version's
        reward("z", 1.0),  # a turn outside the window
    ]
    report = metrics_personalization.served(join(_turns(), [], rewards))
    assert set(report) == {"v1", "v2"}
    v1 = report["v1"]
    assert (v1.turns, v1.rewards) == (2, 3)
    assert v1.mean_reward.mean == pytest.approx(0.5)
    assert {s: (m.n, m.mean) for s, m in v1.by_source.items()} == {
        "answer": (2, 0.5),
        "explicit": (1, 0.5),
    }
    assert v1.mean_reward.ci_low < 0.5 < v1.mean_reward.ci_high
    assert report["v2"].mean_reward.n == 1


def test_a_shadow_policy_is_valued_by_inverse_propensity_on_the_served_rewards():
    rewards = [reward("a", 1.0), reward("b", 1.0), reward("c", 0.0)]
    shadows = [
        shadow("a", "personalization", "v3", {"strategy": "hint", "propensity": 0.9}),
        shadow("b", "personalization", "v3", {"strategy": "hint", "propensity": 0.9}),
        shadow("c", "personalization", "v3", {"strategy": "hint"}, served_version="v2"),
    ]
    v3 = metrics_personalization.shadow(join(_turns(), [], rewards, shadows))["v3"]
    # a: agrees, 1 / 0.5 = 2; b: disagrees, 0; c: agrees, 0 / 0.5 = 0.
    assert v3.ips_value.n == 3
    assert v3.ips_value.mean == pytest.approx(2 / 3)
    assert v3.served_value.mean == pytest.approx(2 / 3)
    assert {v: (p.successes, p.n) for v, p in v3.agreement.items()} == {"v1": (1, 2), "v2": (1, 1)}
    assert v3.mean_reward is None  # it served nobody
