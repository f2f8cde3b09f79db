"""`make bench`'s turn-by-stage figures: the in-process work behind the small stages, and what
serving each stage adds (its p50 as the Ingress timed it minus its work's p50)."""

from __future__ import annotations

import pytest

from benchmarks.run import _stage_rows
from benchmarks.turn_stages import small_stages_in_process, stage_overheads


def test_the_small_stages_are_timed_in_process() -> None:
    figures = small_stages_in_process(samples=20)
    for stage in ("personalization", "reply"):
        assert figures[stage]["n"] == 20
        assert 0 <= figures[stage]["p50_ms"] <= figures[stage]["p99_ms"]
    # A posterior draw of every strategy's weights costs something; the reply is a template
    # (under the 3 decimals of a millisecond that percentiles keep).
    assert figures["personalization"]["p50_ms"] > 0


def test_overheads_are_the_served_p50_less_the_work_and_only_where_both_are_known() -> None:
    served = {
        "stages": {
            "emotion": {"p50_ms": 11.5, "p99_ms": 20.0, "n": 300},
            "difficulty": {"p50_ms": 7.0, "p99_ms": 9.0, "n": 300},
            "personalization": {"p50_ms": 4.0, "p99_ms": 6.0, "n": 300},
            "total": {"p50_ms": 20.0, "p99_ms": 30.0, "n": 300},
        }
    }
    work = {
        "emotion": {"p50_ms": 3.0},
        "personalization": {"p50_ms": 0.6},
        "reply": {"p50_ms": 0.01},
    }
    overheads = stage_overheads(served, work)
    # difficulty has no in-process figure, reply no served one, total is not a model stage
    assert overheads == {"emotion": pytest.approx(8.5), "personalization": pytest.approx(3.4)}

    rows = _stage_rows(
        {"served": {"tutor_stages_1_client": served}, "tutor_stage_overheads_ms": overheads}
    )
    assert [r[0].rsplit(" ", 1)[1] for r in rows] == [
        "emotion",
        "difficulty",
        "personalization",
        "total",
    ]
    assert rows[0][2] == "8.5 ms more than in-process" and rows[1][2] == ""
