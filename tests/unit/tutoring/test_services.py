"""The services behind the routes, without Serve: the routes only wrap what these return."""

import json

import pytest

from deployments.lifecycle.rollout import UnknownVersionError
from deployments.schemas import (
    ChatCompletionRequest,
    ComponentHealth,
    DifficultyRequest,
    FeedbackRequest,
    ProviderState,
    TutorRequest,
)
from deployments.tutoring.exceptions import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
)
from deployments.tutoring.health import HealthCheck
from deployments.tutoring.learners import Learners
from deployments.tutoring.predictions import Predictions
from deployments.tutoring.turn_runner import TurnHandles, TurnRunner
from deployments.tutoring.tutor_service import TutorService
from models.difficulty.tracer import as_interactions
from store.records import AnswerRecord
from store.sqlite_store import SQLiteStore
from tests.support.fake_handles import FakeHandle
from tests.unit.tutoring.fakes import choose, emotion_ok, fails, respond


class _Observer:
    def __init__(self):
        self.turns = []

    def record_turn(self, response, *, stream):
        self.turns.append((response.strategy.name, stream))


def _handles(**overrides) -> TurnHandles:
    async def version(learner_id=None):
        return "v1"

    async def rollout():
        return {"champion": "v1", "canary": None, "shadow": None, "loaded": ["v1"]}

    async def provider_states():
        return {}

    handles = dict(
        emotion=FakeHandle(classify=emotion_ok, model_version=version, rollout=rollout),
        difficulty=FakeHandle(predict=fails, model_version=version, mastery=fails, rollout=rollout),
        personalization=FakeHandle(choose=choose, model_version=version, rollout=rollout),
        router=FakeHandle(respond=respond, provider_states=provider_states),
    )
    return TurnHandles(**{**handles, **overrides})


@pytest.fixture
def store(tmp_path):
    return SQLiteStore(tmp_path / "t.db")


def _service(store, observer=None, **handles) -> TutorService:
    runner = TurnRunner(_handles(**handles), store, stage_timeout_s=0.5)
    return TutorService(runner, observer)


async def _events(stream) -> list[tuple[str, dict]]:
    events = []
    async for text in stream:
        name, data = text.strip().split("\n")
        events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


async def test_a_turn_is_answered_stored_and_observed(store):
    observer = _Observer()
    service = _service(store, observer)
    request = TutorRequest(learner_id="l1", message="why?", turn_id="t-1")
    response = await service.tutor(request, "req-1")
    assert response.reply == "reply to why?" and store.get_turn("t-1") is not None
    assert observer.turns == [("quiz", False)]


async def test_a_retried_turn_is_replayed_and_another_learners_turn_id_conflicts(store):
    service = _service(store)
    first = await service.tutor(TutorRequest(learner_id="l1", message="why?", turn_id="t-1"), "r")
    again = await service.tutor(TutorRequest(learner_id="l1", message="hm", turn_id="t-1"), "r")
    assert again.reply == first.reply
    streamed = await _events(
        await service.tutor(
            TutorRequest(learner_id="l1", message="hm", turn_id="t-1", stream=True), "r"
        )
    )
    assert [name for name, _ in streamed] == ["state", "token", "summary"]
    assert streamed[1][1]["text"] == first.reply
    with pytest.raises(ConflictError, match="another learner"):
        await service.tutor(TutorRequest(learner_id="l2", message="hi", turn_id="t-1"), "r")


async def test_a_streamed_turn_sends_state_tokens_then_its_summary(store):
    async def stream(context):
        yield {"type": "token", "text": "Half "}
        yield {"type": "token", "text": "is more."}
        _, info, _ = await respond(context)
        yield {"type": "done", "llm": info}

    router = FakeHandle(stream=stream)
    service = _service(store, router=router)
    request = TutorRequest(learner_id="l1", message="why?", stream=True)
    events = await _events(await service.tutor(request, "req-1"))
    assert [name for name, _ in events] == ["state", "token", "token", "summary"]
    summary = events[-1][1]
    assert summary["reply"] == "Half is more." and "first_token" in summary["timings_ms"]
    assert store.get_turn(summary["turn_id"]).reply == "Half is more."


async def test_a_chat_without_user_text_is_invalid(store):
    body = ChatCompletionRequest.model_validate(
        {"model": "tutor", "user": "l1", "messages": [{"role": "user", "content": "  "}]}
    )
    with pytest.raises(InvalidRequestError, match="no user message"):
        await _service(store).chat(body, "req-1")


async def test_a_chat_turn_is_stored_under_the_learner_id_given_for_its_user(store):
    body = ChatCompletionRequest.model_validate(
        {"model": "tutor", "user": "l1", "messages": [{"role": "user", "content": "why?"}]}
    )
    completion = await _service(store).chat(body, "req-1", learner_id="tenant-a/l1")
    turn = store.get_turn(completion.tutor.turn_id)
    assert turn.learner_id == "tenant-a/l1"  # a tenant's (deployments/security/tenancy.py)


async def test_difficulty_reads_the_stored_answers_then_the_posted_ones(store):
    seen = []

    async def predict(history, candidates, trace, **routing):
        seen.append([(h.item_id, h.correct) for h in as_interactions(history)])  # rows on the wire
        return "prediction"

    store.get_or_create_learner("l1", now=0.0)
    store.add_answer(
        AnswerRecord(
            learner_id="l1", source_id="s1", ts=1.0, item_id="a", skill_id="1", correct=True
        )
    )
    handles = _handles(difficulty=FakeHandle(predict=predict))
    predictions = Predictions(handles, store, timeout_s=0.5)
    body = DifficultyRequest.model_validate(
        {
            "learner_id": "l1",
            "history": [{"item_id": "b", "skill_id": "1", "correct": False}],
            "candidates": [{"item_id": "c", "skill_id": "1"}],
        }
    )
    assert await predictions.difficulty(body) == "prediction"
    assert seen == [[("a", True), ("b", False)]]


async def test_a_failing_model_makes_its_endpoint_unavailable(store):
    predictions = Predictions(_handles(), store, timeout_s=0.5)
    body = DifficultyRequest.model_validate({"candidates": [{"item_id": "c", "skill_id": "1"}]})
    with pytest.raises(UnavailableError, match="difficulty model is unavailable"):
        await predictions.difficulty(body)


async def test_naming_a_version_not_in_service_is_a_conflict(store):
    async def predict(history, candidates, trace, version=None, **routing):
        raise UnknownVersionError(f"difficulty {version} is not loaded; loaded: v5")

    handles = _handles(difficulty=FakeHandle(predict=predict))
    predictions = Predictions(handles, store, timeout_s=0.5)
    body = DifficultyRequest.model_validate(
        {"candidates": [{"item_id": "c", "skill_id": "1"}], "model_version": "v1"}
    )
    with pytest.raises(ConflictError, match="difficulty v1 is not loaded"):
        await predictions.difficulty(body)


async def test_unknown_learners_and_turns_are_not_found(store):
    learners = Learners(_handles(), store, timeout_s=0.5)
    with pytest.raises(NotFoundError, match="learner_id 'nobody'"):
        await learners.profile("nobody")
    with pytest.raises(NotFoundError, match="turn_id 'nope'"):
        await learners.feedback(FeedbackRequest(turn_id="nope", reward=1.0))


async def test_a_profile_names_the_parts_it_could_not_compute(store):
    await _service(store).tutor(TutorRequest(learner_id="l1", message="why?"), "req-1")

    async def stats(learner_id):
        return {}

    async def preferred(context, **routing):
        return "quiz"

    personalization = FakeHandle(strategy_stats=stats, preferred=preferred)
    profile = await Learners(
        _handles(personalization=personalization), store, timeout_s=0.5
    ).profile("l1")
    assert (profile.turn_count, profile.preferred_strategy) == (1, "quiz")
    assert profile.mastery == [] and profile.model_version == "v1"
    assert profile.degraded == ["difficulty: RuntimeError"]


async def test_health_is_degraded_when_a_deployment_is_down(store):
    async def states():
        return {
            "groq": ProviderState(
                configured=True, breaker="open", retry_in_s=3.0, ttft_ms=None,
                error_rate=1.0, requests=3,
            )
        }  # fmt: skip

    healthy = await HealthCheck(_handles(router=FakeHandle(provider_states=states)), store).check()
    assert healthy.status == "ok" and healthy.model_versions["emotion"] == "v1"
    assert healthy.deployments["LLMRouter"].detail.startswith("0 of 1 providers usable")
    assert healthy.rollouts["emotion"].loaded == ["v1"]
    down = await HealthCheck(_handles(difficulty=FakeHandle(rollout=fails)), store).check()
    assert down.status == "degraded"
    assert down.deployments["Difficulty"] == ComponentHealth(ok=False, detail="RuntimeError")
    assert "difficulty" not in down.model_versions


async def test_a_profile_counts_every_answer_and_reads_mastery_from_a_turns_window(store):
    """Past the 1,000 answers a turn reads, the count is still the learner's and mastery comes
    from the rows a turn would send (``deployments.tutoring.history.history_window``)."""
    await _service(store).tutor(TutorRequest(learner_id="l1", message="why?"), "req-1")
    for i in range(1200):
        store.add_answer(AnswerRecord(learner_id="l1", source_id=f"s{i}", item_id=str(i),
                                      skill_id="9", correct=True, ts=float(i)))  # fmt: skip
    read = []

    async def mastery(history, **routing):
        read.append(history)
        return []

    async def stats(learner_id):
        return {}

    async def version(learner_id=None):
        return "v1"

    async def preferred(context, **routing):
        return "quiz"

    handles = _handles(
        difficulty=FakeHandle(mastery=mastery, model_version=version),
        personalization=FakeHandle(strategy_stats=stats, preferred=preferred),
    )
    profile = await Learners(handles, store, timeout_s=0.5).profile("l1")
    assert profile.answer_count == 1200
    assert [item for item, _, _ in read[0]] == [str(i) for i in range(500, 1200)]
