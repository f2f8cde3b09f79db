"""Parsed turn records shared by the reads of one store object, by turn id.

Every tutoring turn reads the learner's 20 most recent turns, and the next turn reads 19 of
them again: parsing those records was ~12% of the ingress replica's CPU under load (py-spy,
16 clients). A stored turn never changes (insert-only; ``TurnRecord`` is frozen), so a record
parsed once serves every later read; only new turns are parsed. Bounded (LRU) and thread-safe:
a replica's store calls run in worker threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from store.records import TurnRecord

DEFAULT_CAPACITY = 4096  # ~200 learners' recent turns; a record is a few kB parsed


class ParsedTurns:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._records: OrderedDict[str, TurnRecord] = OrderedDict()
        self._lock = threading.Lock()
        self.parsed = 0  # records parsed (misses), for tests and profiling

    def records(
        self, raw: Iterable[tuple[str, Any]], parse: Callable[[Any], TurnRecord]
    ) -> list[TurnRecord]:
        """``raw``: ``(turn_id, stored form)`` pairs in the order wanted; ``parse`` turns a
        stored form into a record, called only for turns not parsed before."""
        out = []
        for turn_id, stored in raw:
            with self._lock:
                record = self._records.get(turn_id)
                if record is not None:
                    self._records.move_to_end(turn_id)
            if record is None:
                record = parse(stored)  # outside the lock: parsing is the slow part
                self.parsed += 1
                with self._lock:
                    self._records[turn_id] = record
                    if len(self._records) > self.capacity:
                        self._records.popitem(last=False)
            out.append(record)
        return out
