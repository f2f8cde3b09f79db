"""The ingress-side coalescing of /v1/emotion requests, against a stand-in Emotion handle."""

import asyncio

import pytest

from deployments.schemas import EmotionResponse, EmotionResult, GoEmotionsScores
from deployments.tutoring.emotion_coalescing import CoalescedEmotion
from tests.support.fake_handles import FakeHandle


def _result(text: str) -> EmotionResult:
    # The text is carried in the scores so that each caller can check it got its own results.
    return EmotionResult(
        state="neutral",
        confidence=1.0,
        states={"neutral": 1.0},
        goemotions=GoEmotionsScores(scores={text: 1.0}, predicted=[]),
    )


class _SlowEmotion:
    """Answers each call after a delay, and records the size of every call."""

    def __init__(self, delay_s: float = 0.02, fail: bool = False):
        self.calls: list[int] = []
        self.delay_s = delay_s
        self.fail = fail
        self.handle = FakeHandle(classify=self._classify)

    async def _classify(self, texts):
        self.calls.append(len(texts))
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("replica died")
        return EmotionResponse(results=[_result(t) for t in texts], model_version="v9")


def _texts_of(response: EmotionResponse) -> list[str]:
    return [next(iter(r.goemotions.scores)) for r in response.results]


async def test_concurrent_requests_share_calls_and_each_gets_its_own_results():
    emotion = _SlowEmotion()
    coalesced = CoalescedEmotion(emotion.handle, max_texts=64, calls_in_flight=1)
    requests = [[f"r{i}-t{j}" for j in range(1 + i % 3)] for i in range(40)]
    responses = await asyncio.gather(*(coalesced.classify(texts) for texts in requests))
    assert [_texts_of(r) for r in responses] == requests
    assert all(r.model_version == "v9" for r in responses)
    assert sum(emotion.calls) == sum(len(t) for t in requests)
    assert len(emotion.calls) < len(requests) / 4  # the first call goes alone, the rest merge
    assert max(emotion.calls) <= 64


async def test_a_lone_request_is_sent_at_once():
    emotion = _SlowEmotion(delay_s=0.0)
    coalesced = CoalescedEmotion(emotion.handle, max_texts=64, calls_in_flight=1)
    response = await asyncio.wait_for(coalesced.classify(["hello"]), timeout=1.0)
    assert _texts_of(response) == ["hello"]
    assert emotion.calls == [1]


async def test_a_request_larger_than_max_texts_still_goes_through_whole():
    emotion = _SlowEmotion()
    coalesced = CoalescedEmotion(emotion.handle, max_texts=4, calls_in_flight=1)
    texts = [f"t{i}" for i in range(10)]
    responses = await asyncio.gather(coalesced.classify(["first"]), coalesced.classify(texts))
    assert _texts_of(responses[1]) == texts
    assert emotion.calls == [1, 10]


async def test_a_failed_call_fails_every_request_in_it_and_the_next_call_works():
    emotion = _SlowEmotion(fail=True)
    coalesced = CoalescedEmotion(emotion.handle, max_texts=64, calls_in_flight=1)
    outcomes = await asyncio.gather(
        *(coalesced.classify([f"t{i}"]) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    emotion.fail = False
    assert _texts_of(await coalesced.classify(["again"])) == ["again"]


async def test_a_caller_that_gives_up_does_not_disturb_the_others():
    emotion = _SlowEmotion(delay_s=0.05)
    coalesced = CoalescedEmotion(emotion.handle, max_texts=64, calls_in_flight=1)
    first = asyncio.create_task(coalesced.classify(["a"]))
    await asyncio.sleep(0.01)  # "a" is in flight; the next two wait for the slot
    impatient = asyncio.create_task(coalesced.classify(["b"]))
    patient = asyncio.create_task(coalesced.classify(["c"]))
    await asyncio.sleep(0.01)
    impatient.cancel()
    assert _texts_of(await first) == ["a"]
    assert _texts_of(await patient) == ["c"]
    with pytest.raises(asyncio.CancelledError):
        await impatient
    assert emotion.calls == [1, 1]  # "b" was dropped before its call, not sent


class _InFlightCounter:
    """Wraps a classify coroutine; ``peak`` is the most calls that were in flight at once."""

    def __init__(self, classify) -> None:
        self._classify = classify
        self.in_flight = 0
        self.peak = 0

    async def classify(self, texts):
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await self._classify(texts)
        finally:
            self.in_flight -= 1


async def test_calls_in_flight_bounds_concurrent_calls():
    emotion = _SlowEmotion(delay_s=0.03)
    counter = _InFlightCounter(emotion._classify)
    emotion.handle = FakeHandle(classify=counter.classify)
    coalesced = CoalescedEmotion(emotion.handle, max_texts=2, calls_in_flight=2)
    await asyncio.gather(*(coalesced.classify([f"t{i}"]) for i in range(12)))
    assert counter.peak == 2


async def test_a_malformed_answer_fails_its_callers_instead_of_leaving_them_waiting():
    async def short_answer(texts):
        return EmotionResponse(results=[_result(t) for t in texts[:-1]], model_version="v9")

    coalesced = CoalescedEmotion(FakeHandle(classify=short_answer), max_texts=64, calls_in_flight=1)
    with pytest.raises(RuntimeError, match="results"):
        await asyncio.wait_for(coalesced.classify(["a", "b"]), timeout=1.0)


async def test_lowering_calls_in_flight_takes_effect_on_running_workers():
    emotion = _SlowEmotion(delay_s=0.02)
    counter = _InFlightCounter(emotion._classify)
    handle = FakeHandle(classify=counter.classify)
    coalesced = CoalescedEmotion(handle, max_texts=1, calls_in_flight=3)
    await asyncio.gather(*(coalesced.classify([f"t{i}"]) for i in range(9)))
    assert counter.peak == 3
    coalesced.configure(max_texts=1, calls_in_flight=1)
    counter.peak = 0
    results = await asyncio.gather(*(coalesced.classify([f"u{i}"]) for i in range(6)))
    assert [_texts_of(r) for r in results] == [[f"u{i}"] for i in range(6)]
    assert counter.peak == 1
