"""Emotion batch scoring's comparison with the served version, and its gate, without Ray."""

import json

import numpy as np
import pandas as pd
import pytest

from models.common.vocab import LEARNING_STATES
from pipelines.batch_score import verdict
from pipelines.emotion.batch_score import (
    SERVED_COLUMNS,
    STATE_COLUMNS,
    Thresholds,
    checks,
    compare,
    js_divergence,
    served_distribution,
)


def one_hot(state: str, weight: float = 0.9) -> np.ndarray:
    rest = (1 - weight) / (len(LEARNING_STATES) - 1)
    return np.array([weight if s == state else rest for s in LEARNING_STATES])


def scored(pairs: list[tuple[str, str]], comparable: list[bool] | None = None) -> pd.DataFrame:
    """Rows as the scorer writes them: (candidate state, served state) per turn."""
    rows = []
    for i, (candidate, served) in enumerate(pairs):
        p, q = one_hot(candidate), one_hot(served)
        rows.append(
            {
                "turn_id": f"t{i}", "state": candidate, "served_state": served,
                "served_version": "v4", "shift_tv": 0.5 * np.abs(p - q).sum(),
                "comparable": True if comparable is None else comparable[i],
                **dict(zip(STATE_COLUMNS, p, strict=True)),
                **dict(zip(SERVED_COLUMNS, q, strict=True)),
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def test_agreement_overall_and_per_served_state_on_comparable_turns_only():
    frame = scored(
        [("confused", "confused"), ("curious", "confused"), ("neutral", "neutral"),
         ("anxious", "frustrated")],
        comparable=[True, True, True, False],
    )  # fmt: skip
    result = compare(frame)
    assert result["comparable_turns"] == 3 and result["not_comparable_turns"] == 1
    assert result["agreement"] == pytest.approx(2 / 3)
    assert result["per_state"]["confused"] == {"served_turns": 2, "agreement": 0.5}
    assert result["per_state"]["neutral"]["agreement"] == 1.0
    assert result["per_state"]["frustrated"] == {"served_turns": 0, "agreement": None}
    # Candidate shares: confused, curious, neutral 1/3 each; served: confused 2/3, neutral 1/3.
    assert result["state_frequency_tv"] == pytest.approx(1 / 3)


def test_the_same_states_show_no_shift_and_pass():
    states = [LEARNING_STATES[i % 8] for i in range(240)]
    result = compare(scored(list(zip(states, states, strict=True))))
    assert result["agreement"] == 1.0
    assert result["mean_distribution_js_bits"] == pytest.approx(0.0, abs=1e-12)
    assert result["mean_turn_tv"] == pytest.approx(0.0, abs=1e-12)
    assert verdict(checks(result, Thresholds(), rows=240)) == "pass"


def test_a_candidate_that_moves_states_fails_the_gate():
    served = [LEARNING_STATES[i % 8] for i in range(240)]
    candidate = ["neutral" if i % 3 else s for i, s in enumerate(served)]
    failed = {
        c.name
        for c in checks(
            compare(scored(list(zip(candidate, served, strict=True)))), Thresholds(), rows=240
        )
        if not c.passed
    }
    assert {"agreement", "state_frequency_tv", "mean_distribution_js_bits"} <= failed


def test_too_few_comparable_turns_fail_whatever_they_say():
    result = compare(scored([("neutral", "neutral")] * 10))
    assert verdict(checks(result, Thresholds(), rows=10)) == "fail"
    assert verdict(checks(result, Thresholds(min_turns=10), rows=10)) == "pass"


def test_js_divergence_is_zero_for_equal_and_one_bit_for_disjoint():
    p = np.array([0.5, 0.5, 0, 0])
    assert js_divergence(p, p) == pytest.approx(0.0)
    assert js_divergence(p, np.array([0, 0, 0.5, 0.5])) == pytest.approx(1.0)


def test_a_logged_distribution_that_is_missing_or_broken_reads_as_nan():
    good = json.dumps({"states": dict(zip(LEARNING_STATES, one_hot("curious"), strict=True))})
    assert served_distribution(good)[LEARNING_STATES.index("curious")] == pytest.approx(0.9)
    for bad in (None, "", "{}", json.dumps({"states": {"curious": 0.3}})):
        assert np.isnan(served_distribution(bad)).all()
