"""The chaos report from known attempts and a real SQLite store: which acknowledged writes are
lost, which turns are stored twice, and the issue's goals per fault."""

from __future__ import annotations

import pytest

from benchmarks.chaos import chaos_config, expand
from benchmarks.chaos_load import Attempt, FeedbackOutcome, LoadSpec, TurnOutcome, marker, turn_body
from benchmarks.chaos_report import (
    answers_per_s,
    client_view,
    duplicates,
    goals,
    markdown_table,
    stored_markers,
    summarise_run,
    verify_writes,
)
from store import FeedbackRecord, TurnRecord
from store.sqlite_store import SQLiteStore

OK = Attempt(10.0, 10.5, 200)
DEGRADED = Attempt(10.0, 10.5, 200, degraded=("emotion: ActorDiedError",))
DROPPED = Attempt(11.0, 11.1, 0, "ServerDisconnectedError")


def _turn(turn_id: str, *, learner: str = "L1", message: str | None = None) -> TurnRecord:
    return TurnRecord(
        turn_id=turn_id,
        learner_id=learner,
        ts=100.0,
        request_id=f"req-{turn_id}",
        message=message or f"why? [{turn_id}]",
        reply="Let's see.",
        emotion={},
        difficulty={},
        strategy="hint",
        propensity=0.2,
        context=[],
        provider="offline",
        model="offline",
        model_versions={},
        timings_ms={},
    )


def _outcome(turn_id: str, first: Attempt, retry: Attempt | None = None, **kw) -> TurnOutcome:
    return TurnOutcome("kill:Emotion", 0, turn_id, "L1", first, retry, complete=True, **kw)


@pytest.fixture
def store(tmp_path):
    with SQLiteStore(tmp_path / "tutor.db") as store:
        yield store


def test_an_answered_turn_or_acknowledged_feedback_missing_from_the_store_is_lost(store):
    store.save_turn(_turn("t1"))
    store.save_turn(_turn("t3"))
    store.add_feedback(FeedbackRecord(turn_id="t3", learner_id="L1", reward=0.5, ts=1.0))
    outcomes = [
        _outcome("t1", OK),
        _outcome("t2", DEGRADED),  # answered, never stored
        _outcome("t3", OK, feedback=FeedbackOutcome(0.25, OK)),  # stored with another reward
        _outcome("t4", DROPPED, DROPPED),  # never answered: nothing was acknowledged
    ]
    found = verify_writes(store, outcomes, bound_s=0)
    assert found["acknowledged_turns"] == 3 and found["acknowledged_feedback"] == 1
    assert (found["lost_turns"], found["lost_feedback"]) == (1, 1)
    assert not found["all_stored"] and set(found["lost_examples"]) == {"t2", "t3"}


def test_a_logical_turn_stored_under_two_ids_is_a_duplicate(store):
    store.save_turn(_turn("t1"))
    store.save_turn(_turn("server-made-id", message="why? [t1]"))  # the same turn, again
    store.save_turn(_turn("t2"))
    counts, foreign = stored_markers(store, since=0)
    retried = [_outcome("t1", DROPPED, OK), _outcome("t2", DROPPED, OK)]
    assert duplicates(retried, counts, foreign) == {
        "duplicate_turns": 1,
        "stored_under_another_id": 1,
        "retried": 2,
        "retried_ok_stored_once": 1,
    }


UNAVAILABLE = Attempt(1, 2, 503, "store_unavailable", retry_after="2")
QUEUED = Attempt(3, 4, 202, accepted=True, queued=True)


def test_a_feedback_is_acknowledged_by_a_200_or_a_queued_202_never_by_a_503():
    assert FeedbackOutcome(0.5, OK).acknowledged
    assert FeedbackOutcome(0.5, QUEUED).acknowledged
    assert not FeedbackOutcome(0.5, Attempt(3, 4, 202, accepted=True, queued=False)).acknowledged
    waiting = FeedbackOutcome(0.5, UNAVAILABLE, [UNAVAILABLE])
    assert waiting.store_unavailable and not waiting.acknowledged
    assert FeedbackOutcome(0.5, UNAVAILABLE, [UNAVAILABLE, QUEUED]).acknowledged
    assert not Attempt(1, 2, 503, "overloaded", retry_after="1").store_unavailable


def test_a_queued_feedback_is_checked_against_the_store_like_a_200(store):
    store.save_turn(_turn("t1"))
    store.save_turn(_turn("t2"))
    store.add_feedback(FeedbackRecord(turn_id="t1", learner_id="L1", reward=0.5, ts=1.0))
    outcomes = [
        _outcome("t1", OK, feedback=FeedbackOutcome(0.5, UNAVAILABLE, [QUEUED])),
        _outcome("t2", OK, feedback=FeedbackOutcome(1.0, QUEUED)),  # never applied: lost
        _outcome("t3", DROPPED, DROPPED),
    ]
    found = verify_writes(store, outcomes, bound_s=0)
    assert (found["acknowledged_feedback"], found["lost_feedback"]) == (2, 1)
    assert found["lost_examples"] == ["t2"]


def test_a_feedback_still_unavailable_at_the_end_is_neither_acknowledged_nor_lost(store):
    store.save_turn(_turn("t1"))
    outcomes = [_outcome("t1", OK, feedback=FeedbackOutcome(0.5, UNAVAILABLE, [UNAVAILABLE]))]
    found = verify_writes(store, outcomes, bound_s=0)
    assert (found["acknowledged_feedback"], found["lost_feedback"]) == (0, 0)
    view = client_view(outcomes)["feedback"]
    assert (view["store_unavailable"], view["store_unavailable_then_acknowledged"]) == (1, 0)
    assert view["not_acknowledged"] == 1 and view["503_without_retry_after"] == 0


def test_client_view_counts_first_attempts_and_what_their_retries_did():
    feedback_404 = FeedbackOutcome(0.5, Attempt(1, 2, 404, "not_found"))
    feedback_503 = FeedbackOutcome(1.0, Attempt(1, 2, 503, "store_unavailable"), [OK])
    feedback_202 = FeedbackOutcome(0.0, UNAVAILABLE, [UNAVAILABLE, QUEUED])
    view = client_view(
        [
            _outcome("a", OK, feedback=feedback_404),
            _outcome("b", DEGRADED, feedback=feedback_503),
            _outcome("c", DROPPED, OK, feedback=feedback_202),
            _outcome("d", DROPPED, DROPPED),
        ]
    )
    assert (view["requests"], view["ok"], view["degraded"], view["failed"]) == (4, 2, 1, 2)
    assert (view["retried"], view["retried_ok"]) == (2, 1)
    assert view["failed_by"] == {"ServerDisconnectedError": 2}
    assert view["degraded_by"] == {"emotion": 1}
    feedback = view["feedback"]
    assert (feedback["sent"], feedback["acknowledged"], feedback["queued"]) == (3, 2, 1)
    assert feedback["status"] == {"404": 1, "503": 3, "200": 1, "202": 1}
    assert feedback["503_without_retry_after"] == 1
    assert (feedback["store_unavailable"], feedback["store_unavailable_then_acknowledged"]) == (
        2,
        2,
    )


def test_answers_per_second_count_first_attempts_and_retries_inside_the_window():
    outcomes = [_outcome("a", OK), _outcome("b", DROPPED, Attempt(11.5, 12.0, 200))]
    assert answers_per_s(outcomes, 10.0, 12.0) == 0.5  # 10.5 in, 12.0 at the end: out
    assert answers_per_s(outcomes, 10.0, 13.0) == pytest.approx(2 / 3, abs=0.01)


def _row(kind: str, *, failed=0, retried_ok=0, lost_turns=0, lost_feedback=0, ratio=1.0, s=None):
    return {
        "fault": "f",
        "kind": kind,
        "window": "20 s",
        "turns": {
            "requests": 1000,
            "ok": 1000 - failed,
            "degraded": 0,
            "failed": failed,
            "retried_ok": retried_ok,
            "feedback": {"status": s or {"200": 10}, "503_without_retry_after": 0},
        },
        "writes": {
            "acknowledged_turns": 1000,
            "acknowledged_feedback": 10,
            "lost_turns": lost_turns,
            "lost_feedback": lost_feedback,
        },
        "duplicates": {
            "duplicate_turns": 0,
            "stored_under_another_id": 0,
            "retried_ok_stored_once": retried_ok,
        },
        "throughput": {"ratio": ratio},
    }


def test_goals_of_a_replica_kill():
    met = goals("replica_kill", _row("replica_kill", failed=1, retried_ok=1))
    assert all(g["met"] for g in met.values())
    unmet = goals("replica_kill", _row("replica_kill", failed=2, retried_ok=1, lost_feedback=1))
    assert {n for n, g in unmet.items() if not g["met"]} == {
        "failed_share",
        "retries_recover",
        "feedback_kept",
        "feedback_contract",
    }


def test_goals_of_a_store_fault():
    assert all(g["met"] for g in goals("store", _row("store", ratio=0.6)).values())
    row = _row("store", ratio=0.01, lost_turns=6, s={"200": 3, "404": 1})
    unmet = {n for n, g in goals("store", row).items() if not g["met"]}
    assert unmet == {"throughput", "turns_kept", "feedback_contract"}


def test_a_503_store_unavailable_with_retry_after_or_a_queued_202_keeps_the_feedback_contract():
    for kind in ("store", "restart", "replica_kill"):
        row = _row(kind, s={"200": 5, "202": 3, "503": 4})
        assert goals(kind, row)["feedback_contract"]["met"]
        row["turns"]["feedback"]["503_without_retry_after"] = 1
        assert not goals(kind, row)["feedback_contract"]["met"]
    assert not goals("restart", _row("restart", s={"500": 1}))["feedback_contract"]["met"]


def test_the_table_has_a_row_per_fault_and_names_unmet_goals():
    row = _row("store", ratio=0.01, lost_turns=6)
    row["turns"]["feedback"].update(
        queued=2, store_unavailable=4, store_unavailable_then_acknowledged=3
    )
    row["goals"] = goals("store", row)
    table = markdown_table([row]).splitlines()
    assert len(table) == 3 and table[1].count("---") == table[0].count("|") - 1
    assert "| 1000 + 10 | 2 | 4 (3) | 6 | 0 | 0.01x | NOT met: throughput, turns_kept |" in table[2]


def test_each_turn_carries_its_turn_id_as_the_marker_of_its_message():
    spec = LoadSpec(tag="t")
    body = turn_body(spec, client=3, seq=7, turn_id="t-c3-7")
    assert marker(body["message"]) == "t-c3-7" and body["turn_id"] == "t-c3-7"
    assert body["learner_id"] == spec.learner(3, 7) == "t-l15"
    assert marker("a message without one") is None


def test_the_chaos_config_runs_two_ingress_replicas_and_no_provider(tmp_path):
    import yaml

    from tests.support.serve_process import DEFAULT_CONFIG

    path = chaos_config(
        yaml.safe_load(DEFAULT_CONFIG.read_text()),
        port=1234,
        store_uri="sqlite:///x.db",
        workdir=tmp_path,
    )
    config = yaml.safe_load(path.read_text())
    deployments = {d["name"]: d for d in config["applications"][0]["deployments"]}
    scaling = deployments["Ingress"]["autoscaling_config"]
    assert scaling["min_replicas"] == scaling["initial_replicas"] == 2 <= scaling["max_replicas"]
    assert deployments["LLMRouter"]["user_config"]["providers"] == []
    assert config["http_options"]["port"] == 1234


def test_fault_groups_expand_and_unknown_faults_are_refused():
    assert expand(["kills"])[-1] == "kill:Ingress" and len(expand(["kills"])) == 5
    assert expand(["store:locked", "restart"]) == ["store:locked", "app:restart"]
    with pytest.raises(SystemExit, match="unknown faults"):
        expand(["kill:Nobody"])


def test_a_run_is_summarised_per_fault_against_the_baseline_of_the_same_run(store):
    for turn_id in ("b1", "b2", "k1"):
        store.save_turn(_turn(turn_id))
    answered = [
        TurnOutcome("baseline", 0, "b1", "L1", Attempt(1.0, 2.0, 200), complete=True),
        TurnOutcome("baseline", 0, "b2", "L1", Attempt(2.0, 3.0, 200), complete=True),
        TurnOutcome(
            "kill:Ingress", 0, "k1", "L1", DROPPED, Attempt(11.5, 12.0, 200), complete=True
        ),
        TurnOutcome("kill:Ingress", 1, "k2", "L1", Attempt(12.0, 0, -1)),  # still in flight
    ]
    found = summarise_run(
        answered,
        store=store,
        windows={"baseline": (0.0, 4.0), "kill:Ingress": (10.0, 14.0)},
        records={
            "kill:Ingress": {
                "kind": "replica_kill",
                "window": "4 s",
                "writes": verify_writes(store, answered[2:3], bound_s=0),  # after its phase
            }
        },
        verify_s=0,
        since=0,
    )
    assert found["baseline"]["answers_per_s"] == 0.5
    (row,) = found["faults"]
    assert row["throughput"] == {"answers_per_s": 0.25, "baseline_answers_per_s": 0.5, "ratio": 0.5}
    assert (row["turns"]["requests"], row["turns"]["failed"], row["turns"]["retried_ok"]) == (
        1,
        1,
        1,
    )
    assert not row["goals"]["failed_share"]["met"] and row["goals"]["retries_recover"]["met"]
    assert found["whole_run"]["writes"]["lost_turns"] == 0
