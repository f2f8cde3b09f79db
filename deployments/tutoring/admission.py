"""Load shedding at the front door: a bounded number of requests at work, a bounded line behind
them, and an answer within milliseconds for everything past that.

Why here and not only Serve's ``max_queued_requests``: Serve's own rejection (and its 408) is a
plain-text body written before the request reaches the application, so a client would get two
error shapes. The ingress admits requests itself, in the one error shape, and Serve's limits on
the Ingress are set above these (``max_ongoing_requests`` >= at work + waiting) as a backstop.

Why 503 and not 429: 429 says *this client* sent too much (a per-key rate limit); shedding says
the service as a whole is past its capacity, which is 503 with ``Retry-After``.

What a client sees:
- past ``max_in_flight`` at work and ``max_waiting`` in line: 503 at once (``Overloaded``);
- a line whose expected wait (its length over the rate places came free in the last seconds)
  is past ``max_wait_s``, or whose first request has already waited half of it: 503 at once,
  rather than after waiting that long for nothing;
- waiting longer than ``max_wait_s`` for a place anyway: 503 (it never started, safe to retry);
- not answered within ``request_timeout_s`` in all: 408 (``RequestTimedOut``).

So an admitted request waits at most ``max_wait_s`` before it starts, which bounds the accepted
requests' latency under any load (README: "Shedding, not collapsing").
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class Overloaded(RuntimeError):
    """The replica is past its capacity: 503 with ``Retry-After``."""

    def __init__(self, reason: str, retry_after_s: float) -> None:
        super().__init__(f"the tutor is over capacity ({reason}); retry after the delay given")
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after_s)))


class RequestTimedOut(TimeoutError):
    """Not answered within the request's time limit: 408."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the request was not answered within {timeout_s:g}s")
        self.timeout_s = timeout_s


@dataclass(frozen=True)
class AdmissionLimits:
    max_in_flight: int
    max_waiting: int
    max_wait_s: float
    request_timeout_s: float
    retry_after_s: float


RATE_WINDOW_S = 5.0  # places freed in this window give the rate the line moves at
MIN_RATE_SAMPLES = 10  # fewer frees than this in the window: no estimate, the hard caps only
# Refuse newcomers at once while the first in line has waited this share of max_wait_s.
STANDING_LINE_SHARE = 0.5


class Admission:
    """A FIFO of requests waiting for one of ``max_in_flight`` places; limits change in place."""

    def __init__(
        self,
        limits: AdmissionLimits,
        *,
        on_refused: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``on_refused(reason)`` sees each refusal: ``full``, ``expected_wait``, ``waited`` or
        ``timed_out``."""
        self.limits = limits
        self.in_flight = 0
        # The line, in arrival order: each waiter's future and when it joined.
        self._waiters: dict[asyncio.Future[None], float] = {}
        self._freed: deque[float] = deque()  # when places came free, within RATE_WINDOW_S
        self._clock = clock
        # admitted, and refused by reason (metrics and tests)
        self.counts: Counter[str] = Counter()
        self._on_refused = on_refused or (lambda reason: None)

    def expected_wait_s(self) -> float | None:
        """How long a request joining the line now would wait, from the recent rate places
        came free; None without enough recent frees to say."""
        self._forget_old_frees()
        if len(self._freed) < MIN_RATE_SAMPLES:
            return None
        return (len(self._waiters) + 1) / (len(self._freed) / RATE_WINDOW_S)

    def refused(self, reason: str) -> None:
        self.counts[reason] += 1
        self._on_refused(reason)

    def _forget_old_frees(self) -> None:
        horizon = self._clock() - RATE_WINDOW_S
        while self._freed and self._freed[0] < horizon:
            self._freed.popleft()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def configure(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self._wake()  # a higher limit lets waiters in now

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Hold a place at work for the block, or raise ``Overloaded`` without one."""
        await self._enter()
        try:
            yield
        finally:
            self.in_flight -= 1
            self._freed.append(self._clock())
            self._forget_old_frees()
            self._wake()

    async def _enter(self) -> None:
        limits = self.limits
        if self.in_flight < limits.max_in_flight and not self._waiters:
            self.in_flight += 1
            self.counts["admitted"] += 1
            return
        if len(self._waiters) >= limits.max_waiting:
            self.refused("full")
            raise Overloaded(
                f"{self.in_flight} requests at work and {len(self._waiters)} waiting",
                limits.retry_after_s,
            )
        expected = self.expected_wait_s()
        if expected is not None and expected > limits.max_wait_s:
            self.refused("expected_wait")
            raise Overloaded(f"the line would take ~{expected:.1f}s", limits.retry_after_s)
        head_waited = self._clock() - next(iter(self._waiters.values()), self._clock())
        if head_waited > STANDING_LINE_SHARE * limits.max_wait_s:
            # The line is standing still, whatever the recent rate says (it lags when the
            # rate falls): refusing now is what keeps waiters from being refused after waiting.
            self.refused("expected_wait")
            raise Overloaded(
                f"the first in line has waited {head_waited:.1f}s", limits.retry_after_s
            )
        place: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[place] = self._clock()
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the place when a
            # cancellation (the request's own deadline, the client gone) comes in the step the
            # place is given, and the request would then run on past its time limit.
            async with asyncio.timeout(limits.max_wait_s):
                await asyncio.shield(place)
        except TimeoutError:
            if place.done():  # let in at the deadline: keep the place
                self.counts["admitted"] += 1
                return
            del self._waiters[place]
            self.refused("waited")
            reason = f"waited {limits.max_wait_s:g}s for a place"
            raise Overloaded(reason, limits.retry_after_s) from None
        except BaseException:  # cancelled (client gone, request timeout): give the place back
            if place.done():
                self.in_flight -= 1
                self._wake()
            self._waiters.pop(place, None)
            raise
        self.counts["admitted"] += 1

    def _wake(self) -> None:
        # Places go to waiters in arrival order; ``in_flight`` counts a woken waiter at once,
        # so a request arriving meanwhile cannot take its place.
        while self._waiters and self.in_flight < self.limits.max_in_flight:
            place = next(iter(self._waiters))
            del self._waiters[place]
            if not place.done():
                self.in_flight += 1
                place.set_result(None)


async def admit(admission: Admission, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work()`` in a place at work, within the request's time limit.

    The time limit covers the wait for a place and the work up to its answer. A streamed answer
    (an async iterator) keeps its place until the stream ends; its pieces then run under the
    stages' own timeouts (a stream cannot change its status once started).
    """
    places = contextlib.AsyncExitStack()
    timeout_s = admission.limits.request_timeout_s
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            await places.enter_async_context(admission.admitted())
            result = await work()
    except TimeoutError:
        await places.aclose()
        if deadline.expired():
            admission.refused("timed_out")
            raise RequestTimedOut(timeout_s) from None
        raise
    except BaseException:
        await places.aclose()
        raise
    if isinstance(result, AsyncIterator):
        return _release_after(result, places)  # type: ignore[return-value]
    await places.aclose()
    return result


async def _release_after(stream: AsyncIterator, places: contextlib.AsyncExitStack):
    try:
        async for piece in stream:
            yield piece
    finally:
        await places.aclose()
