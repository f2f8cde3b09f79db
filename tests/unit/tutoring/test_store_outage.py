"""Turns and feedback while the store is away: answered without waiting on it, journaled in the
outbox, and stored exactly once when it is back (SQLite locked, a slow store, MongoDB down)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import mongomock
import pymongo
import pytest
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

from deployments.schemas import FeedbackRequest, TutorRequest
from deployments.tutoring.durable import PendingWrites, StoreGuard, StoreUnavailable
from deployments.tutoring.exceptions import NotFoundError, StoreUnavailableError
from deployments.tutoring.learners import Learners
from deployments.tutoring.rewards import apply_feedback
from deployments.tutoring.turn_runner import TurnHandles, TurnRunner
from store import FeedbackRecord, StoreError
from store.mongo_store import MongoStore
from store.outbox import Outbox
from store.sqlite_store import SQLiteStore
from tests.store.conftest import MONGODB_URI, fresh_mongo_db_name, needs_mongodb
from tests.support.fake_handles import FakeHandle
from tests.unit.tutoring.fakes import choose, emotion_ok, fails, respond

QUEUED = "store: the turn is queued and will be saved"
COLD = "store: history unavailable, answered as a new learner"
CONTEXT_POLICY = "policy-x"  # what fakes.choose answers; statistics are named after it


class App:
    """The ingress's tutoring services over one store, with its guard and outbox."""

    def __init__(self, store, outbox_dir, *, personalization_feedback=None, timeout_s=0.3):
        self.store = store
        self.guard = StoreGuard(store, timeout_s=timeout_s, away_s=0.5)
        self.pending = PendingWrites(
            Outbox(outbox_dir, store_id="test"),
            self.guard,
            statistics=lambda v: v,
            retry_s=(0.05, 0.2),
        )

        async def feedback(**kwargs):  # the personalization deployment's, over the same store
            turn = store.get_turn(kwargs["turn_id"])
            record = FeedbackRecord(
                turn_id=turn.turn_id,
                learner_id=turn.learner_id,
                reward=kwargs["reward"],
                ts=kwargs["now"],
                **(kwargs["answer"] or {}),
            )
            accepted, stored = apply_feedback(store, turn, record, statistics=lambda v: v)
            from deployments.schemas import FeedbackResponse

            return FeedbackResponse(
                turn_id=turn.turn_id, accepted=accepted, reward=stored.reward, strategy="quiz"
            )

        handles = TurnHandles(
            emotion=FakeHandle(classify=emotion_ok),
            difficulty=FakeHandle(predict=fails),
            personalization=FakeHandle(
                choose=choose, feedback=personalization_feedback or feedback
            ),
            router=FakeHandle(respond=respond),
        )
        self.runner = TurnRunner(
            handles, store, stage_timeout_s=2.0, guard=self.guard, pending=self.pending
        )
        self.learners = Learners(
            handles, store, timeout_s=2.0, guard=self.guard, pending=self.pending
        )

    async def turn(self, **request):
        body = TutorRequest.model_validate({"learner_id": "l1", "message": "why?", **request})
        replayed = await self.runner.replay(body)
        if replayed is not None:
            return replayed
        turn = await self.runner.prepare(body, "req")
        reply, llm = await self.runner.reply(turn)
        return await self.runner.finish(turn, reply, llm)

    async def feedback(self, turn_id, **body):
        return await self.learners.feedback(FeedbackRequest(turn_id=turn_id, **body))

    async def drained(self, timeout_s=10.0):
        deadline = time.monotonic() + timeout_s
        while not await self.pending.drain_once():
            assert time.monotonic() < deadline, f"{self.pending.depth()} writes still pending"
            await asyncio.sleep(0.05)


class ExclusiveLock:
    """Another process's ``BEGIN EXCLUSIVE`` on the SQLite file (as an operator's sqlite3 would)."""

    def __init__(self, path):
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def __enter__(self):
        self.conn.execute("BEGIN EXCLUSIVE")
        return self

    def __exit__(self, *exc):
        self.conn.execute("ROLLBACK")
        self.conn.close()


def _sqlite(tmp_path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "tutor.db", timeout_s=0.2)


async def test_a_locked_sqlite_store_stalls_no_turn_and_loses_none(tmp_path):
    store = _sqlite(tmp_path)
    app = App(store, tmp_path / "outbox")
    first = await app.turn(turn_id="before")
    with ExclusiveLock(store.path):
        started = time.monotonic()
        responses = await asyncio.gather(*(app.turn(turn_id=f"t{i}") for i in range(8)))
        more = [await app.turn(turn_id=f"u{i}") for i in range(8)]  # while it is known away
        elapsed = time.monotonic() - started
        assert app.pending.depth() == 16
    # The first ones wait out the timeout (0.3 s) once; the rest do not wait on the store.
    assert elapsed < 3.0, elapsed
    for response in [*responses, *more]:
        assert COLD in response.degraded and QUEUED in response.degraded
    await app.drained()
    ids = [t.turn_id for t in store.recent_turns("l1", limit=100)]
    assert sorted(ids) == sorted(
        ["before", *(f"t{i}" for i in range(8)), *(f"u{i}" for i in range(8))]
    )
    assert store.get_learner("l1").turn_count == 17
    assert first.degraded == []
    assert app.pending.depth() == 0 and app.pending.outbox.path.stat().st_size == 0


class SlowSaves(SQLiteStore):
    """save_turn blocks until released (a store that answers, late)."""

    release = threading.Event()

    def save_turn(self, turn):
        self.release.wait(timeout=10)
        return super().save_turn(turn)


async def test_a_late_save_and_the_outbox_replay_store_the_turn_once(tmp_path):
    store = SlowSaves(tmp_path / "tutor.db")
    app = App(store, tmp_path / "outbox")
    response = await app.turn(turn_id="t1")
    assert QUEUED in response.degraded
    assert response.timings_ms["save"] < 2000
    store.release.set()  # the abandoned save lands, then the outbox replays the same turn
    await asyncio.sleep(0.2)
    await app.drained()
    assert [t.turn_id for t in store.recent_turns("l1")] == ["t1"]
    assert store.get_learner("l1").turn_count == 1


async def test_a_retried_turn_still_in_the_outbox_is_answered_from_it(tmp_path):
    store = _sqlite(tmp_path)
    app = App(store, tmp_path / "outbox")
    with ExclusiveLock(store.path):
        first = await app.turn(turn_id="t1")
        again = await app.turn(turn_id="t1", message="a different text, same turn")
    assert again.reply == first.reply
    await app.drained()
    assert [t.turn_id for t in store.recent_turns("l1")] == ["t1"]


async def test_an_answer_sent_during_an_outage_is_stored_and_rewards_the_turn_before(tmp_path):
    store = _sqlite(tmp_path)
    app = App(store, tmp_path / "outbox")
    await app.turn(turn_id="t1")
    answer = {"item_id": "i1", "skill_id": "s1", "correct": True}
    with ExclusiveLock(store.path):
        response = await app.turn(turn_id="t2", answer=answer)
        assert COLD in response.degraded
    await app.drained()
    await app.drained()  # a second replay changes nothing
    assert [a.item_id for a in store.answers("l1")] == ["i1"]
    rewards = store.learner_rewards("l1")
    assert [(r.turn_id, r.source, r.reward) for r in rewards] == [("t1", "answer", 1.0)]
    assert store.bandit_stats(CONTEXT_POLICY)["quiz"].n == 1


async def test_feedback_for_a_queued_turn_is_journaled_and_applied_once(tmp_path):
    store = _sqlite(tmp_path)
    app = App(store, tmp_path / "outbox")
    with ExclusiveLock(store.path):
        await app.turn(turn_id="t1")
        first = await app.feedback("t1", reward=1.0)
        second = await app.feedback("t1", reward=0.0)
    assert (first.queued, first.accepted) == (True, True)
    assert (second.queued, second.accepted) == (True, False)
    await app.drained()
    assert store.get_feedback("t1").reward == 1.0
    assert [(r.source, r.reward) for r in store.learner_rewards("l1")] == [("explicit", 1.0)]
    assert store.bandit_stats(CONTEXT_POLICY)["quiz"].n == 1
    after = await app.feedback("t1", reward=0.0)  # stored now: the usual duplicate
    assert (after.queued, after.accepted) == (False, False)
    assert store.bandit_stats(CONTEXT_POLICY)["quiz"].n == 1


async def test_another_tenants_turn_is_unknown_also_while_it_waits_in_the_outbox(tmp_path):
    store = _sqlite(tmp_path)
    app = App(store, tmp_path / "outbox")
    other_tenant = lambda learner_id: learner_id.startswith("b/")  # noqa: E731
    with ExclusiveLock(store.path):
        await app.turn(turn_id="t1")  # learner "l1": not the caller's
        assert app.pending.pending_turn("t1") is not None
        with pytest.raises(NotFoundError):
            await app.learners.feedback(
                FeedbackRequest(turn_id="t1", reward=1.0), owns=other_tenant
            )
    await app.drained()
    with pytest.raises(NotFoundError):  # stored now: still not the caller's
        await app.learners.feedback(FeedbackRequest(turn_id="t1", reward=1.0), owns=other_tenant)
    assert store.get_feedback("t1") is None


async def test_feedback_is_a_503_when_the_store_cannot_say_and_a_404_only_when_it_can(tmp_path):
    store = _sqlite(tmp_path)
    app = App(store, tmp_path / "outbox")
    with pytest.raises(NotFoundError):
        await app.feedback("never", reward=1.0)
    # Another replica's journal on this machine holds writes: the turn may be in it.
    other = Outbox(tmp_path / "outbox", store_id="test")
    other.append("turn", "elsewhere", {})
    with pytest.raises(StoreUnavailableError):
        await app.feedback("elsewhere", reward=1.0)
    other.done(other.pending()[0])
    app.guard._failed()  # the store just failed a call: nothing to read the turn from
    with pytest.raises(StoreUnavailableError) as refused:
        await app.feedback("never", reward=1.0)
    assert refused.value.code == "store_unavailable"


async def test_feedback_whose_personalization_call_fails_is_queued_for_a_stored_turn(tmp_path):
    store = _sqlite(tmp_path)
    app = App(store, tmp_path / "outbox", personalization_feedback=fails)
    await app.turn(turn_id="t1")
    response = await app.feedback(
        "t1", reward=0.5, answer={"item_id": "i", "skill_id": "s", "correct": False}
    )
    assert response.queued and response.accepted
    await app.drained()
    assert sorted((r.source, r.reward) for r in store.learner_rewards("l1")) == [
        ("answer", 0.0),
        ("explicit", 0.5),
    ]


async def test_the_guard_refuses_at_once_while_away_and_recovers(tmp_path):
    gate = threading.Event()
    guard = StoreGuard(_sqlite(tmp_path), timeout_s=0.2, away_s=0.3)

    def stuck():
        gate.wait(timeout=5)

    with pytest.raises(StoreUnavailable):
        await guard.call(stuck)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await guard.call(lambda: 1)
    assert time.monotonic() - started < 0.1 and guard.away
    assert await guard.call(lambda: 1, read=True, probe=True) == 1
    assert guard.away  # a read answers (a SQLite file locked for writing does): writes may not
    assert await guard.call(lambda: 2, probe=True) == 2  # the drain's probe finds it back
    assert await guard.call(lambda: 3) == 3 and not guard.away
    gate.set()


class Unreachable:
    """A pymongo collection whose server cannot be reached while ``down`` is set."""

    down = False

    def __init__(self, collection, error):
        self._collection, self._error = collection, error

    def __getattr__(self, name):
        attribute = getattr(self._collection, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            if Unreachable.down:
                raise self._error("No servers found yet (simulated)")
            return attribute(*args, **kwargs)

        return call


@pytest.fixture(params=["mongomock", pytest.param("mongodb", marks=needs_mongodb)])
def mongo_store(request):
    """mongomock, and a real server when MONGODB_URI is set (a database of its own)."""
    if request.param == "mongomock":
        yield MongoStore(client=mongomock.MongoClient())
        return
    client = pymongo.MongoClient(MONGODB_URI, serverSelectionTimeoutMS=3000)
    name = fresh_mongo_db_name()
    yield MongoStore(client=client, db_name=name)
    client.drop_database(name)
    client.close()


@pytest.mark.parametrize("error", [ServerSelectionTimeoutError, AutoReconnect])
async def test_an_unreachable_mongodb_queues_turns_and_feedback_until_it_is_back(
    tmp_path, error, mongo_store
):
    store = mongo_store
    for name in ("_learners", "_turns", "_answers", "_feedback", "_bandit", "_rewards"):
        setattr(store, name, Unreachable(getattr(store, name), error))
    app = App(store, tmp_path / "outbox")
    Unreachable.down = True
    try:
        with pytest.raises(StoreError):
            store.get_turn("t1")  # pymongo's error reaches callers as the store's own
        responses = [await app.turn(turn_id=f"t{i}") for i in range(3)]
        assert all(QUEUED in r.degraded for r in responses)
        queued = await app.feedback("t0", reward=1.0)
        assert queued.queued
        assert not await app.pending.drain_once()
    finally:
        Unreachable.down = False
    await app.drained()
    assert sorted(t.turn_id for t in store.recent_turns("l1")) == ["t0", "t1", "t2"]
    assert store.get_feedback("t0").reward == 1.0
    assert store.bandit_stats(CONTEXT_POLICY)["quiz"].n == 1


async def test_the_drain_ends_when_cancelled_idle_or_backing_off(tmp_path):
    """A stopping replica (or test) cancels the drain once; it must end, whether it waits for
    work or backs off from a store that is away (3.11's wait_for could swallow that)."""
    store = _sqlite(tmp_path)
    app = App(store, tmp_path / "outbox")
    with ExclusiveLock(store.path):
        await app.turn(turn_id="t1")  # queued: the drain backs off while the lock holds
        for _ in range(2):
            task = app.pending._task
            await asyncio.sleep(0.3)
            task.cancel()
            await asyncio.wait([task], timeout=5)
            assert task.cancelled()
            app.pending.ensure_started()
    await app.drained()
    task = app.pending._task
    await asyncio.sleep(0.3)  # idle now: waiting for a write or the next look for journals
    task.cancel()
    await asyncio.wait([task], timeout=5)
    assert task.cancelled()
