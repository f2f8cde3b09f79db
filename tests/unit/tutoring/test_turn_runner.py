"""The turn's degradation rules, with small in-process stand-ins for the deployment handles."""

import pytest

from deployments.schemas import TutorRequest
from deployments.tutoring.turn_runner import TurnHandles, TurnRunner
from store import StoreError
from store.sqlite_store import SQLiteStore
from tests.support.fake_handles import FakeHandle as _Handle
from tests.unit.tutoring.fakes import choose, emotion_ok, fails, hangs, respond


def _runner(tmp_path, **handles) -> TurnRunner:
    defaults = dict(
        emotion=_Handle(classify=emotion_ok),
        difficulty=_Handle(predict=fails),
        personalization=_Handle(choose=choose),
        router=_Handle(respond=respond),
    )
    return TurnRunner(
        TurnHandles(**{**defaults, **handles}),
        SQLiteStore(tmp_path / "t.db"),
        stage_timeout_s=0.5,
        reply_timeout_s=0.7,
    )


async def _turn(runner: TurnRunner, **request):
    body = TutorRequest.model_validate({"learner_id": "l1", "message": "why?", **request})
    turn = await runner.prepare(body, "req-1")
    reply, llm = await runner.reply(turn)
    return await runner.finish(turn, reply, llm)


async def test_healthy_turn_is_not_degraded_and_is_stored(tmp_path):
    runner = _runner(tmp_path)
    response = await _turn(runner)
    assert response.degraded == []
    assert response.reply == "reply to why?"
    assert response.learner_state.emotion.state == "curious"
    assert response.model_versions == {"emotion": "v9", "personalization": "policy-x"}
    assert runner.store.get_turn(response.turn_id).request_id == "req-1"


async def test_failing_emotion_degrades_to_an_uninformed_state(tmp_path):
    response = await _turn(_runner(tmp_path, emotion=_Handle(classify=fails)))
    assert response.degraded == ["emotion: RuntimeError"]
    emotion = response.learner_state.emotion
    assert emotion.state == "neutral"
    assert sum(emotion.states.values()) == pytest.approx(1.0)
    assert response.model_versions["emotion"] == "unavailable"


async def test_failing_difficulty_and_personalization_still_answer(tmp_path):
    runner = _runner(tmp_path, personalization=_Handle(choose=fails))
    response = await _turn(runner, candidates=[{"item_id": "1", "skill_id": "2"}])
    assert response.degraded == ["difficulty: RuntimeError", "personalization: RuntimeError"]
    assert response.learner_state.difficulty is None
    assert response.strategy.propensity == pytest.approx(1 / 6)


async def test_stalled_router_times_out_to_the_offline_responder(tmp_path):
    response = await _turn(_runner(tmp_path, router=_Handle(respond=hangs)))
    assert response.degraded == ["reply: timed out after 0.7s"]
    assert response.llm.provider == "offline"
    assert response.reply.startswith("[offline tutor")


async def test_answer_with_the_turn_is_recorded_once(tmp_path):
    runner = _runner(tmp_path)
    answer = {"item_id": "1", "skill_id": "2", "correct": True}
    await _turn(runner, turn_id="t-1", answer=answer)
    assert [a.item_id for a in runner.store.answers("l1")] == ["1"]


async def test_next_answer_rewards_the_strategy_of_the_turn_before(tmp_path):
    runner = _runner(tmp_path)
    first = await _turn(runner, turn_id="t-1")
    answer = {"item_id": "1", "skill_id": "2", "correct": True}
    await _turn(runner, turn_id="t-2", answer=answer)
    # The same answer again under a new turn id is a new answer, but t-1 is rewarded once.
    await _turn(runner, turn_id="t-3", answer={**answer, "correct": False})

    rewards = runner.store.learner_rewards("l1")
    assert [(r.turn_id, r.source, r.strategy, r.reward) for r in rewards] == [
        (first.turn_id, "answer", "quiz", 1.0),
        ("t-2", "answer", "quiz", 0.0),
    ]
    stats = runner.store.bandit_stats("policy-x")["quiz"]
    assert (stats.n, stats.reward_sum) == (2, 1.0)


class _RewardRefusingStore(SQLiteStore):
    def add_reward(self, reward, *, context):
        raise ValueError("bandit statistics of another dimension")


async def test_a_failed_reward_is_named_and_the_turn_keeps_its_history(tmp_path):
    runner = _runner(tmp_path)
    runner.store = _RewardRefusingStore(tmp_path / "refusing.db")
    await _turn(runner, turn_id="t-1")
    answer = {"item_id": "1", "skill_id": "2", "correct": True}
    body = TutorRequest.model_validate(
        {"learner_id": "l1", "message": "why?", "turn_id": "t-2", "answer": answer}
    )
    turn = await runner.prepare(body, "req-2")
    assert turn.degraded == ["reward: ValueError"]
    assert turn.history == [("1", "2", True)]
    assert [t.turn_id for t in turn.recent] == ["t-1"]


async def test_answer_on_a_first_turn_rewards_nothing(tmp_path):
    runner = _runner(tmp_path)
    await _turn(runner, answer={"item_id": "1", "skill_id": "2", "correct": True})
    assert runner.store.learner_rewards("l1") == []


async def test_the_reply_remembers_this_session_only(tmp_path):
    seen = []

    async def remembering(context):
        seen.append([learner for learner, _ in context.history])
        return await respond(context)

    runner = _runner(tmp_path, router=_Handle(respond=remembering))
    await _turn(runner, message="old session", session_id="s1")
    await _turn(runner, message="first", session_id="s2")
    await _turn(runner, message="second", session_id="s2")
    assert seen[-1] == ["first"]


class _DownStore:
    """A store whose backend is unreachable: every call raises StoreError."""

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise StoreError("connection refused")

        return fail


async def test_unreachable_store_still_answers_and_says_the_turn_was_not_saved():
    handles = dict(
        emotion=_Handle(classify=emotion_ok),
        difficulty=_Handle(predict=fails),
        personalization=_Handle(choose=choose),
        router=_Handle(respond=respond),
    )
    runner = TurnRunner(TurnHandles(**handles), _DownStore(), stage_timeout_s=0.5)
    body = TutorRequest.model_validate({"learner_id": "l1", "message": "why?", "turn_id": "t-9"})
    assert await runner.replay(body) is None
    response = await _turn(runner, turn_id="t-9")
    assert response.reply == "reply to why?"
    # Without an outbox, nothing can keep the turn: the response says so.
    assert response.degraded == [
        "store: history unavailable, answered as a new learner",
        "store: the turn was not saved",
    ]
