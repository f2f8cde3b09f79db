"""`make bench`'s difficulty figures: every kind of turn is measured, on the requested learners."""

from benchmarks.difficulty import PAST_LIMIT_ROWS, bench_difficulty_in_process
from deployments.schemas import MAX_HISTORY


def test_fresh_next_turn_and_past_the_stored_limit_are_each_measured():
    result = bench_difficulty_in_process("v1", threads=1, learners=3)
    assert result["architecture"] == "dkt"
    assert PAST_LIMIT_ROWS > MAX_HISTORY  # the learners are past what a turn reads
    past = result["past_limit"]
    assert past["answers"] == PAST_LIMIT_ROWS
    for figures in (result["fresh"], result["next_turn"], past["windowed"], past["newest_rows"]):
        assert figures["n"] == 3
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
