import json

from pipelines.export_store import export
from store import RewardRecord, TurnRecord
from store.sqlite_store import SQLiteStore


def _turn(turn_id: str, policy: str | None, context: list[float]) -> TurnRecord:
    return TurnRecord(
        turn_id=turn_id,
        learner_id="l1",
        ts=float(len(turn_id)),
        request_id="r",
        message="m",
        reply="r",
        emotion={},
        difficulty={},
        strategy="hint",
        propensity=0.25,
        context=context,
        provider="p",
        model="m",
        model_versions={"personalization": policy} if policy else {},
        timings_ms={},
    )


def test_export_joins_rewards_by_source_and_writes_the_policy_statistics(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    store.save_turn(_turn("t1", "p1", [1.0, 0.5]))
    store.save_turn(_turn("t22", None, []))  # a fallback choice: exported, no statistics
    for source, value in (("explicit", 0.5), ("answer", 1.0)):
        reward = RewardRecord(
            turn_id="t1", learner_id="l1", source=source, policy="p1", strategy="hint",
            reward=value, ts=1.0,
        )  # fmt: skip
        store.add_reward(reward, context=[1.0, 0.5])

    summary = export(store, tmp_path / "out")

    rows = [
        json.loads(line) for line in (tmp_path / "out" / "turns.jsonl").read_text().splitlines()
    ]
    assert [(r["turn_id"], r["reward_explicit"], r["reward_answer"]) for r in rows] == [
        ("t1", 0.5, 1.0),
        ("t22", None, None),
    ]
    assert rows[0]["context"] == [1.0, 0.5] and rows[0]["propensity"] == 0.25
    assert rows[1]["policy"] == "unavailable"
    assert (summary["turns"], summary["rewarded_turns"]) == (2, 1)
    stats = json.loads((tmp_path / "out" / "bandit_p1.json").read_text())
    assert stats["hint"]["n"] == 2 and stats["hint"]["b"] == [1.5, 0.75]
