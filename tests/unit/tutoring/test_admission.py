"""Load shedding: places at work, a bounded line, refusals that come at once, and no place lost.

Work is held open by events, not timed: what is asserted is who got a place, never how fast.
"""

from __future__ import annotations

import asyncio

import pytest

from deployments.tutoring.admission import (
    Admission,
    AdmissionLimits,
    Overloaded,
    RequestTimedOut,
    admit,
)


def _limits(**overrides) -> AdmissionLimits:
    values = dict(
        max_in_flight=2, max_waiting=2, max_wait_s=30.0, request_timeout_s=60.0, retry_after_s=1.0
    )
    return AdmissionLimits(**{**values, **overrides})


class HeldWork:
    """Work that runs until released, recording the order it started in."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[int] = []

    def make(self, n: int):
        async def work() -> int:
            self.started.append(n)
            await self.release.wait()
            return n

        return work


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_past_the_places_and_the_line_a_request_is_refused_at_once():
    refused: list[str] = []
    admission = Admission(_limits(), on_refused=refused.append)
    held = HeldWork()
    calls = [asyncio.create_task(admit(admission, held.make(n))) for n in range(4)]
    await _settle()
    assert (admission.in_flight, admission.waiting, held.started) == (2, 2, [0, 1])

    with pytest.raises(Overloaded) as shed:
        await admit(admission, held.make(99))
    assert shed.value.retry_after_header == "1" and refused == ["full"]

    held.release.set()
    assert await asyncio.gather(*calls) == [0, 1, 2, 3]
    assert held.started == [0, 1, 2, 3]  # the line is served in arrival order
    assert (admission.in_flight, admission.waiting) == (0, 0)
    assert admission.counts["admitted"] == 4


async def test_a_request_that_waits_past_max_wait_is_shed_and_leaves_the_line():
    admission = Admission(_limits(max_in_flight=1, max_wait_s=0.05))
    held = HeldWork()
    first = asyncio.create_task(admit(admission, held.make(0)))
    await _settle()
    with pytest.raises(Overloaded, match="waited"):
        await admit(admission, held.make(1))
    assert admission.waiting == 0 and admission.counts["waited"] == 1
    held.release.set()
    assert await first == 0
    assert held.started == [0]  # the shed request never ran


async def test_a_request_past_its_time_limit_gets_a_timeout_and_frees_its_place():
    admission = Admission(_limits(request_timeout_s=0.05))
    never = asyncio.Event()

    async def stuck() -> None:
        await never.wait()

    with pytest.raises(RequestTimedOut):
        await admit(admission, stuck)
    assert admission.in_flight == 0 and admission.counts["timed_out"] == 1


async def test_a_timeout_inside_the_work_is_not_the_requests_time_limit():
    admission = Admission(_limits())

    async def stage_timed_out() -> None:
        raise TimeoutError("a stage's own timeout")

    with pytest.raises(TimeoutError, match="stage") as raised:
        await admit(admission, stage_timed_out)
    assert not isinstance(raised.value, RequestTimedOut)
    assert admission.in_flight == 0


async def test_a_cancelled_waiter_gives_its_place_in_line_back():
    admission = Admission(_limits(max_in_flight=1))
    held = HeldWork()
    first = asyncio.create_task(admit(admission, held.make(0)))
    second = asyncio.create_task(admit(admission, held.make(1)))
    await _settle()
    second.cancel()  # the client went away while waiting
    await _settle()
    assert admission.waiting == 0
    held.release.set()
    assert await first == 0
    assert admission.in_flight == 0 and held.started == [0]


async def test_a_failing_request_frees_its_place():
    admission = Admission(_limits(max_in_flight=1))

    async def fails() -> None:
        raise ValueError("bad")

    for _ in range(3):
        with pytest.raises(ValueError):
            await admit(admission, fails)
    assert admission.in_flight == 0


async def test_a_stream_holds_its_place_until_it_ends():
    admission = Admission(_limits(max_in_flight=1, max_waiting=0))

    async def pieces():
        yield "a"
        yield "b"

    async def streamed():
        return pieces()

    stream = await admit(admission, streamed)
    assert admission.in_flight == 1
    with pytest.raises(Overloaded):
        await admit(admission, streamed)
    assert [piece async for piece in stream] == ["a", "b"]
    assert admission.in_flight == 0


async def test_raising_the_limit_lets_waiters_in_now():
    admission = Admission(_limits(max_in_flight=1))
    held = HeldWork()
    calls = [asyncio.create_task(admit(admission, held.make(n))) for n in range(3)]
    await _settle()
    assert held.started == [0]
    admission.configure(_limits(max_in_flight=3))
    await _settle()
    assert held.started == [0, 1, 2]
    held.release.set()
    await asyncio.gather(*calls)


async def test_a_line_that_would_take_too_long_is_refused_at_once_not_after_waiting():
    now = [0.0]
    admission = Admission(
        _limits(max_in_flight=1, max_waiting=100, max_wait_s=2.0), clock=lambda: now[0]
    )

    async def quick() -> None:
        return None

    for _ in range(10):  # ten places freed within the window: 2 a second
        await admit(admission, quick)
        now[0] += 0.5
    assert admission.expected_wait_s() == pytest.approx(1 / 2.0)

    held = HeldWork()
    calls = [asyncio.create_task(admit(admission, held.make(n))) for n in range(4)]
    await _settle()
    # 1 at work, 3 waiting: a fourth in line would wait ~4 / 2 = 2 s; a fifth, 2.5 s > 2 s.
    assert admission.waiting == 3
    calls.append(asyncio.create_task(admit(admission, held.make(4))))
    await _settle()
    with pytest.raises(Overloaded, match="line would take"):
        await admit(admission, held.make(5))
    assert admission.counts["expected_wait"] == 1 and held.started == [0]
    held.release.set()
    await asyncio.gather(*calls)

    now[0] += 60  # a quiet minute: no recent rate, so only the hard caps apply
    assert admission.expected_wait_s() is None


async def test_while_the_first_in_line_has_waited_long_newcomers_are_refused_at_once():
    now = [0.0]
    admission = Admission(
        _limits(max_in_flight=1, max_waiting=100, max_wait_s=2.0), clock=lambda: now[0]
    )
    held = HeldWork()
    calls = [asyncio.create_task(admit(admission, held.make(n))) for n in range(2)]
    await _settle()
    now[0] += 0.8  # the first in line has waited 0.8 s of max_wait_s 2 s: the line takes more
    calls.append(asyncio.create_task(admit(admission, held.make(2))))
    await _settle()
    assert admission.waiting == 2
    now[0] += 0.4  # 1.2 s > half of 2 s: newcomers are refused, those in line keep their place
    with pytest.raises(Overloaded, match="has waited"):
        await admit(admission, held.make(3))
    held.release.set()
    assert await asyncio.gather(*calls) == [0, 1, 2]


async def test_a_waiter_cancelled_as_its_place_comes_is_cancelled_and_gives_the_place_back():
    """The deadline and the place can come in the same loop step (every request of a burst has
    the same time limit, so the holders time out as the waiters' deadlines fire). The
    cancellation must win: Python 3.11's ``asyncio.wait_for`` returned the place instead, and a
    request ran on past its time limit to the end of its work."""
    admission = Admission(_limits(max_in_flight=1, request_timeout_s=5.0))
    holder = admission.admitted()
    await holder.__aenter__()
    held = HeldWork()
    waiter = asyncio.create_task(admit(admission, held.make(1)))
    await _settle()
    assert admission.waiting == 1

    await holder.__aexit__(None, None, None)  # the place goes to the waiter...
    waiter.cancel()  # ...in the step its deadline cancels it
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert held.started == [] and (admission.in_flight, admission.waiting) == (0, 0)
