"""Recent turns are parsed once per store object: later reads share the parsed records."""

import pytest

from store.parsed_turns import ParsedTurns
from tests.store.test_contract import make_turn


def test_only_new_turns_are_parsed_and_order_is_kept():
    cache = ParsedTurns(capacity=10)
    parse_calls = []

    def parse(turn_id):
        parse_calls.append(turn_id)
        return make_turn(turn_id)

    first = cache.records([("a", "a"), ("b", "b")], parse)
    again = cache.records([("b", "b"), ("c", "c"), ("a", "a")], parse)
    assert parse_calls == ["a", "b", "c"]
    assert [t.turn_id for t in again] == ["b", "c", "a"]
    assert again[0] is first[1]  # shared, which is safe because records are frozen


def test_the_cache_is_bounded_least_recently_used_first():
    cache = ParsedTurns(capacity=2)
    cache.records([("a", "a"), ("b", "b")], make_turn)
    cache.records([("a", "a")], make_turn)  # a is now the most recent
    cache.records([("c", "c")], make_turn)  # evicts b
    parsed = cache.parsed
    cache.records([("a", "a"), ("c", "c")], make_turn)
    assert cache.parsed == parsed
    cache.records([("b", "b")], make_turn)
    assert cache.parsed == parsed + 1


def test_records_are_read_only():
    with pytest.raises(Exception, match="frozen"):
        make_turn("a").reply = "changed"


def test_a_store_parses_a_turn_once_across_reads(store):
    """Through both backends (the contract's fixture): the second read parses only the new turn."""
    for i in range(3):
        store.save_turn(make_turn(f"t{i}", ts=float(i)))
    first = store.recent_turns("L1", limit=20)
    parsed = store._parsed_turns.parsed
    store.save_turn(make_turn("t3", ts=3.0))
    second = store.recent_turns("L1", limit=20)
    assert [t.turn_id for t in second] == ["t0", "t1", "t2", "t3"]
    assert store._parsed_turns.parsed == parsed + 1
    assert second[0] is first[0]
