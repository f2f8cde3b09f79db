"""A bounded cache of encoded learner histories, addressed by the history's own rows.

A learner's next request usually carries the same history plus one new answer, so the encoding
of all but the new rows can be reused (``models.difficulty.tracer`` extends it). The key is the
rows themselves, not a learner id: requests may send any history (``/v1/difficulty`` takes one
in the body), a learner may reach any replica, and an entry whose rows differ from the request's
can never be used, so there is nothing to invalidate. Only the model that filled the cache may
read it: the tracer owns one cache and a new model version gets a new tracer.

Lookup finds the longest cached prefix of the rows through chained prefix hashes (one hash per
row, then dictionary probes from the longest prefix down); a hit is confirmed by comparing the
rows, so a hash collision costs a miss, never a wrong encoding.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CachedPrefix:
    rows: int  # how many leading rows the encoding covers (0: nothing cached)
    encoding: Any  # the model's encoding of those rows; None when rows == 0
    hashes: list[int] = field(default_factory=list)  # the looked-up rows' prefix hashes


NOTHING_CACHED = CachedPrefix(0, None)


def prefix_hashes(rows: Sequence[Hashable]) -> list[int]:
    """``hashes[m - 1]`` identifies ``rows[:m]``."""
    hashes, running = [], 0
    for row in rows:
        running = hash((running, row))
        hashes.append(running)
    return hashes


class EncodingCache:
    """LRU of ``rows -> encoding``, at most ``capacity`` entries; thread-safe."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._entries: OrderedDict[int, tuple[tuple[Hashable, ...], Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.lookups = 0
        self.rows_reused = 0
        self.rows_requested = 0

    def longest_prefix(self, rows: Sequence[Hashable]) -> CachedPrefix:
        hashes = prefix_hashes(rows)
        with self._lock:
            self.lookups += 1
            self.rows_requested += len(rows)
            for m in range(len(rows), 0, -1):
                entry = self._entries.get(hashes[m - 1])
                if entry is not None and entry[0] == tuple(rows[:m]):
                    self._entries.move_to_end(hashes[m - 1])
                    self.rows_reused += m
                    return CachedPrefix(m, entry[1], hashes)
        return CachedPrefix(0, None, hashes)

    def store(
        self,
        rows: Sequence[Hashable],
        encoding: Any,
        *,
        replaces: int = 0,
        hashes: list[int] | None = None,
    ) -> None:
        """Cache ``encoding`` for ``rows``; ``replaces`` > 0 drops the entry of ``rows[:replaces]``
        (the prefix this encoding extended: the learner has moved on from it). ``hashes``: the
        rows' prefix hashes from ``longest_prefix``, so they are not computed twice."""
        if not rows:
            return
        if hashes is None or len(hashes) != len(rows):
            hashes = prefix_hashes(rows)
        with self._lock:
            if replaces:
                self._entries.pop(hashes[replaces - 1], None)
            self._entries[hashes[-1]] = (tuple(rows), encoding)
            self._entries.move_to_end(hashes[-1])
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, float]:
        """Entries, lookups, and the share of requested rows whose encoding was reused."""
        with self._lock:
            return {
                "entries": len(self._entries),
                "lookups": self.lookups,
                "rows_requested": self.rows_requested,
                "rows_reused": self.rows_reused,
                "reuse_ratio": self.rows_reused / self.rows_requested
                if self.rows_requested
                else 0.0,
            }
