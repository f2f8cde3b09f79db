"""A replica's guardrail: a canary that errors is ended, recorded once, and every replica
(including one that did not judge it) stops serving it."""

from __future__ import annotations

import time

from deployments.lifecycle.replica import ReplicaRollout
from deployments.lifecycle.rollout import RolloutConfig
from deployments.lifecycle.serving_stats import N_BUCKETS
from deployments.lifecycle.versions import VersionedModels
from store.records import ServingStatsRecord
from store.sqlite_store import SQLiteStore

STARTED = "2026-01-01T00:00:00+00:00"
CONFIG = {"model_version": "v4", "canary": {"version": "v3", "percent": 50, "started_at": STARTED}}


def _replica(store, name: str) -> tuple[VersionedModels, ReplicaRollout]:
    versions = VersionedModels("emotion", load=lambda v: v, resolve=lambda v: v)
    versions.apply(RolloutConfig.model_validate(CONFIG))
    rollout = ReplicaRollout(versions, store, replica=name)
    rollout.configure(RolloutConfig.model_validate(CONFIG).guardrail)
    return versions, rollout


def _stats(store, version: str, requests: int, errors: int) -> None:
    counts = [0] * N_BUCKETS
    counts[10] = requests
    store.add_serving_stats(
        ServingStatsRecord(
            model="emotion", version=version, replica="r", window_start=time.time() - 5,
            window_end=time.time(), requests=requests, errors=errors, latency_counts=counts,
        )
    )  # fmt: skip


def test_a_healthy_canary_keeps_serving(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    versions, rollout = _replica(store, "a")
    _stats(store, "v4", 200, 1)
    _stats(store, "v3", 200, 1)
    verdict = rollout.check_guardrail()
    assert verdict is not None and not verdict.rollback
    assert versions.plan.canary == "v3" and store.rollout_events("emotion") == []


def test_an_erroring_canary_is_rolled_back_once_and_every_replica_stops_it(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    first, first_rollout = _replica(store, "a")
    second, second_rollout = _replica(store, "b")
    _stats(store, "v4", 200, 1)
    _stats(store, "v3", 200, 40)
    verdict = first_rollout.check_guardrail()
    assert verdict.rollback and "error rate" in verdict.reasons[0]
    assert first.plan.canary is None and first.pick("anyone").version == "v4"
    assert second_rollout.check_guardrail() is None  # found the event: no second verdict
    assert second.plan.canary is None
    (event,) = store.rollout_events("emotion")
    assert event.actor == "guardrail" and (event.from_version, event.to_version) == ("v3", "v4")
    assert event.event_id.startswith("guardrail:emotion:v3:")


def test_a_replica_started_after_the_rollback_never_serves_that_canary(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    _, judge = _replica(store, "a")
    _stats(store, "v4", 200, 1)
    _stats(store, "v3", 200, 40)
    assert judge.check_guardrail().rollback
    later, _ = _replica(store, "new")  # its configure() reads the history before any traffic
    assert later.plan.canary is None


async def test_the_last_window_of_a_burst_is_flushed_without_a_later_request(tmp_path):
    import asyncio

    store = SQLiteStore(tmp_path / "s.db")
    versions = VersionedModels("emotion", load=lambda v: v, resolve=lambda v: v)
    versions.apply(RolloutConfig(model_version="v4"))
    rollout = ReplicaRollout(versions, store, replica="a", flush_interval_s=0.2)
    for _ in range(3):  # the first call flushes at once (nothing yet); the rest wait
        with rollout.serving(versions.pick("x")):
            pass
    await asyncio.sleep(0.8)  # no more calls: the timer flushes what is left
    assert sum(r.requests for r in store.serving_stats("emotion")) == 3
