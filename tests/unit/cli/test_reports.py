"""`tutor models list` and `status` as data: roles from the file and the history, the live
rollout from Serve, and the online comparison beside it."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

import yaml
from pydantic import BaseModel

from deployments.cli import plan, render
from deployments.cli.config_file import ServeConfigFile
from deployments.cli.operations import apply_change
from deployments.cli.reports import list_models, model_status
from deployments.lifecycle.rollout import guardrail_event_id
from store.factory import open_store
from store.records import RolloutEventRecord
from tests.unit.cli.conftest import SERVED_EMOTION, FakeServe, make_workspace

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _ws(config_path, store_uri, serve=None):
    return make_workspace(config_path, store_uri, serve, validate=lambda d, uc: None)


def test_list_shows_versions_metrics_and_roles(config_path, store_uri):
    serve = FakeServe(ServeConfigFile.load(config_path).deploy_config())
    ws = _ws(config_path, store_uri, serve)
    apply_change(ws, "emotion", partial(plan.plan_promote, version="v3"))
    apply_change(ws, "emotion", partial(plan.plan_canary, version="v4", percent=25, now=T0))
    apply_change(ws, "emotion", partial(plan.plan_shadow, version="v2", now=T0))

    (emotion,) = list_models(_ws(config_path, store_uri), "emotion")  # no Serve needed
    roles = {row.version: row.roles for row in emotion.versions}
    expected = {row.version: [] for row in emotion.versions}
    expected |= {"v2": ["shadow"], "v3": ["champion"], "v4": ["canary 25%"]}
    expected[SERVED_EMOTION] = expected[SERVED_EMOTION] + ["previous champion"]
    assert roles == expected
    v4 = next(row for row in emotion.versions if row.version == "v4")
    assert v4.metrics["macro_f1"] == 0.53 and v4.metrics["state_acc"] == 0.9167


def test_list_handles_a_model_with_no_versions_and_renders(config_path, store_uri):
    listings = list_models(_ws(config_path, store_uri))
    by_model = {entry.model: entry for entry in listings}
    assert set(by_model) == {"emotion", "difficulty", "personalization"}
    deployments = yaml.safe_load(config_path.read_text())["applications"][0]["deployments"]
    (served,) = [
        d["user_config"]["model_version"] for d in deployments if d["name"] == "Difficulty"
    ]
    roles = {row.version: row.roles for row in by_model["difficulty"].versions}
    assert roles[served] == ["champion"]
    v1, v2 = by_model["difficulty"].versions[:2]
    assert set(v2.metrics) == {"auc", "log_loss", "ece", "acc"}
    assert set(v1.metrics) == {"auc", "log_loss", "acc"}  # v1 recorded no ECE: no placeholder
    if not by_model["personalization"].versions:
        assert "no registered versions" in by_model["personalization"].notes[0]
    render.listing(listings)  # renders without error


class _Report(BaseModel):
    versions: dict[str, dict]


class _Comparison(BaseModel):
    deltas: list[dict]


def test_status_reads_the_live_rollout_and_adds_the_comparison(config_path, store_uri):
    serve = FakeServe(ServeConfigFile.load(config_path).deploy_config())
    ws = _ws(config_path, store_uri, serve)
    apply_change(ws, "emotion", partial(plan.plan_canary, version="v3", percent=50, now=T0))
    calls = []

    def report_fn(store, model, since, *, champion):
        calls.append((model, since, champion))
        return _Report(versions={SERVED_EMOTION: {"serving": {"requests": 10}}, "v3": {}})

    def compare_fn(report, champion, candidate):
        return _Comparison(deltas=[{"metric": "errors", "champion": 0, "candidate": 1}])

    (status,) = model_status(ws, "emotion", report_fns=(report_fn, compare_fn))
    assert status.live.champion == SERVED_EMOTION and status.live.canary == "v3"
    assert status.live.percent == 50 and status.file_agrees
    assert calls == [("emotion", T0.timestamp(), SERVED_EMOTION)]  # since the canary started
    assert set(status.comparisons) == {"v3"}
    assert [e.action for e in status.history] == ["canary"]
    render.status([status])


def test_status_says_when_the_file_disagrees_and_when_the_guardrail_stopped_a_canary(
    config_path, store_uri
):
    running = ServeConfigFile.load(config_path).deploy_config()
    serve = FakeServe(running)
    ws = _ws(config_path, store_uri, serve)
    apply_change(ws, "emotion", partial(plan.plan_canary, version="v3", percent=50, now=T0))
    store = open_store(store_uri)
    store.add_rollout_event(
        RolloutEventRecord(
            event_id=guardrail_event_id("emotion", "v3", T0.timestamp()),
            model="emotion",
            action="rollback",
            from_version="v3",
            to_version="v4",
            reason="p99 latency 3.1x the champion's",
            actor="guardrail",
            ts=T0.timestamp() + 60,
        )
    )
    store.close()
    serve.running = running  # someone deployed the old file by hand

    (status,) = model_status(ws, "emotion", report_fns=None)
    assert not status.file_agrees
    assert status.live.canary is None
    assert status.file.canary is None  # over, though the file still names it
    assert "p99 latency" in status.file.guardrail_stopped
    # Whatever online_metrics gives for an empty store, the rollout is reported.
    assert status.report is not None or any("live comparison" in n for n in status.notes)
