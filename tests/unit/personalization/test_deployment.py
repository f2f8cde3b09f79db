"""The personalization deployment's learning loop, through the store, without Ray.

Replicas are plain PersonalizationDeployment objects (or processes) sharing one SQLite file,
which is how Serve's replicas share it.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np

from deployments.personalization import PersonalizationDeployment
from models.common.registry import ModelRegistry
from models.common.vocab import LEARNING_STATES, STRATEGIES
from models.personalization.context import CONTEXT_DIM, build_context
from models.personalization.policy_version import PolicyVersion
from store import TurnRecord
from store.sqlite_store import SQLiteStore

POLICY = "lin_ts_test"  # the statistics both registered versions learn into
REWARDED = "worked_example"


def _registry(root: Path) -> Path:
    """v1 explores as served; v2 almost not at all; both on POLICY's statistics."""
    registry = ModelRegistry(root)
    if not registry.versions("personalization"):
        for exploration in (0.5, 0.01):
            source = root / f"src-{exploration}"
            PolicyVersion(POLICY, exploration, 1.0).save(source)
            registry.register("personalization", source, dataset="test", code_version="test")
    return root


def _replica(path, **config) -> PersonalizationDeployment:
    registry = _registry(Path(path).parent / "registry")
    replica = PersonalizationDeployment(
        registry_dir=registry, store_uri="", store=SQLiteStore(path)
    )
    replica.reconfigure({"model_version": "v1", "stats_max_age_s": 2.0, **config})
    return replica


def _save_turn(store, turn_id: str, strategy: str, context: list[float]) -> None:
    store.save_turn(
        TurnRecord(
            turn_id=turn_id,
            learner_id=f"learner-{turn_id}",
            ts=0.0,
            request_id="r",
            message="m",
            reply="r",
            emotion={},
            difficulty={},
            strategy=strategy,
            propensity=0.5,
            context=context,
            provider="p",
            model="m",
            model_versions={"personalization": "v1"},
            timings_ms={},
        )
    )


async def _choose(replica, rng):
    states = dict(zip(LEARNING_STATES, rng.dirichlet(np.ones(len(LEARNING_STATES))), strict=True))
    context = build_context(
        states=states,
        recommended_p_correct=float(rng.random()),
        candidate_p_correct=[float(rng.random())],
        answers=[True, False],
        session_turns=3,
        seconds_since_last_turn=None,
    ).tolist()
    choice, version = await replica.choose(context, learner_id="someone")
    assert version == replica.model_version() and len(context) == CONTEXT_DIM
    return choice, context


async def _teach(replica, turns: int, rng) -> list[str]:
    """Turns where only REWARDED earns a reward, as the API would deliver them."""
    chosen = []
    for t in range(turns):
        choice, context = await _choose(replica, rng)
        _save_turn(replica._store, f"t{t}", choice.name, context)
        reward = 1.0 if choice.name == REWARDED else 0.0
        replica.feedback(turn_id=f"t{t}", reward=reward, answer=None, now=float(t))
        chosen.append(choice.name)
    return chosen


async def test_policy_shifts_to_the_rewarded_strategy_and_keeps_it_after_a_restart(tmp_path):
    rng = np.random.default_rng(0)
    replica = _replica(tmp_path / "s.db")
    chosen = await _teach(replica, 300, rng)
    assert len(set(chosen[:20])) >= 3  # it explored first
    assert chosen[-100:].count(REWARDED) >= 80

    restarted = _replica(tmp_path / "s.db")  # a fresh process: nothing but the store survives
    after = [(await _choose(restarted, rng))[0].name for _ in range(100)]
    assert after.count(REWARDED) >= 80
    assert restarted.preferred((await _choose(restarted, rng))[1]) == REWARDED


def test_feedback_with_reward_and_answer_gives_two_rewards_once(tmp_path):
    replica = _replica(tmp_path / "s.db")
    _save_turn(replica._store, "t1", "hint", [0.5] * CONTEXT_DIM)
    answer = {"item_id": "i", "skill_id": "s", "correct": False}
    first = replica.feedback(turn_id="t1", reward=0.75, answer=answer, now=1.0)
    again = replica.feedback(turn_id="t1", reward=0.0, answer=answer, now=2.0)
    assert (first.accepted, again.accepted) == (True, False)
    stats = replica._store.bandit_stats(POLICY)["hint"]
    assert (stats.n, stats.reward_sum) == (2, 0.75)
    assert replica.strategy_stats("learner-t1")["hint"].model_dump() == {
        "count": 1,
        "rewarded": 2,
        "mean_reward": 0.375,
    }


async def test_promoting_a_version_on_the_same_statistics_keeps_what_was_learned(tmp_path):
    rng = np.random.default_rng(1)
    replica = _replica(tmp_path / "s.db")
    await _teach(replica, 200, rng)
    replica.reconfigure({"model_version": "v2"})
    # v2 hardly explores: the preference v1 learned decides nearly every turn.
    chosen = [(await _choose(replica, rng))[0].name for _ in range(50)]
    assert chosen.count(REWARDED) >= 48


def _feedback_worker(path: str, offset: int, count: int) -> None:
    replica = _replica(path)
    for k in range(offset, offset + count):
        replica.feedback(turn_id=f"t{k}", reward=float(k % 2), answer=None, now=float(k))


def test_two_replica_processes_under_concurrent_feedback_lose_no_update(tmp_path):
    path = str(tmp_path / "s.db")
    store = SQLiteStore(path)
    _registry(tmp_path / "registry")  # before the workers, which only read it
    per_process, contexts = 150, {}
    for k in range(2 * per_process):
        contexts[k] = [1.0, float(k % 3), float(k % 5) - 2.0] + [0.0] * (CONTEXT_DIM - 3)
        _save_turn(store, f"t{k}", STRATEGIES[k % 2], contexts[k])
    spawn = multiprocessing.get_context("spawn")
    workers = [
        spawn.Process(target=_feedback_worker, args=(path, p * per_process, per_process))
        for p in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0

    stats = store.bandit_stats(POLICY)
    for arm_index, arm in enumerate(STRATEGIES[:2]):
        ks = [k for k in contexts if k % 2 == arm_index]
        x = np.array([contexts[k] for k in ks])
        r = np.array([float(k % 2) for k in ks])
        assert stats[arm].n == len(ks)
        np.testing.assert_allclose(np.reshape(stats[arm].a, x.shape[1:] * 2), x.T @ x)
        np.testing.assert_allclose(stats[arm].b, r @ x)
