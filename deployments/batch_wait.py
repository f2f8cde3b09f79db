"""When a replica's batch waits for company: only while other calls are in flight.

``@serve.batch`` holds every batch open ``batch_wait_timeout_s`` after its first item, even on a
replica with nothing else to do: a learner alone on the system paid the whole wait on every
turn (2 ms of a ~20 ms turn here). A call that is the replica's only one in flight has no
company coming from the calls already made, so its batch goes at once; while several are in
flight (concurrent turns), the wait gathers them into one forward pass as before.

Serve reads the timeout when a batch takes its first item, and a call's items are queued in the
same event-loop step as this module sets it, so a call sees the timeout its arrival chose (two
calls arriving together both choose the wait: the later one counts the earlier one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


class BatchWaitWhenBusy:
    """Counts the calls in flight and sets the batch's wait timeout for each new one."""

    def __init__(self, set_timeout_s: Callable[[float], None], wait_s: float) -> None:
        self._set_timeout_s = set_timeout_s
        self.wait_s = wait_s
        self.in_flight = 0

    @contextmanager
    def call(self) -> Iterator[None]:
        self.in_flight += 1
        self._set_timeout_s(self.wait_s if self.in_flight > 1 else 0.0)
        try:
            yield
        finally:
            self.in_flight -= 1
