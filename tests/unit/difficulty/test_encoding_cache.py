"""The cache of encoded learner histories: longest-prefix lookup, LRU bound, no false hits."""

from __future__ import annotations

import pytest

from models.difficulty import encoding_cache
from models.difficulty.encoding_cache import EncodingCache


def test_longest_cached_prefix_is_found_and_replaced_on_extension() -> None:
    cache = EncodingCache(capacity=4)
    rows = [("a", "1", True), ("b", "2", False), ("c", "1", True)]
    assert cache.longest_prefix(rows).rows == 0
    cache.store(rows[:2], "encoding-2")
    hit = cache.longest_prefix(rows)
    assert (hit.rows, hit.encoding) == (2, "encoding-2")
    cache.store(rows, "encoding-3", replaces=2)
    assert len(cache) == 1 and cache.longest_prefix(rows).encoding == "encoding-3"
    # A history that differs in an early row shares nothing.
    assert cache.longest_prefix([("a", "1", False), *rows[1:]]).rows == 0


def test_least_recently_used_entry_goes_first() -> None:
    cache = EncodingCache(capacity=2)
    cache.store([1], "one")
    cache.store([2], "two")
    cache.longest_prefix([1])  # touch "one"
    cache.store([3], "three")
    assert cache.longest_prefix([2]).rows == 0
    assert cache.longest_prefix([1]).encoding == "one"
    with pytest.raises(ValueError):
        EncodingCache(capacity=0)


def test_a_hash_collision_is_a_miss_not_a_wrong_state(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = EncodingCache(capacity=4)
    monkeypatch.setattr(encoding_cache, "prefix_hashes", lambda rows: [7] * len(rows))
    cache.store(["x"], "encoding-x")
    assert cache.longest_prefix(["y"]).rows == 0
    assert cache.longest_prefix(["x"]).encoding == "encoding-x"


def test_stats_report_the_share_of_rows_reused() -> None:
    cache = EncodingCache(capacity=2)
    cache.longest_prefix([1, 2])
    cache.store([1, 2], "s")
    cache.longest_prefix([1, 2, 3, 4])
    assert cache.stats()["reuse_ratio"] == pytest.approx(2 / 6, abs=1e-12)  # 2 of 6 rows
