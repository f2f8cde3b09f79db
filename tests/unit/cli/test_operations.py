"""A change end to end against a fake Serve: applied, then written, then recorded; a refused
or failed change leaves the file, the application and the history as they were."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

import pytest

from deployments.cli import plan
from deployments.cli.config_file import ServeConfigFile
from deployments.cli.errors import (
    ApplyError,
    ApplyTimeoutError,
    DeployFailedError,
    RefusedError,
)
from deployments.cli.operations import apply_change, validate_user_config
from deployments.cli.serve_client import wait_applied
from deployments.config import config_deployments
from store.factory import open_store
from tests.unit.cli.conftest import SERVED_EMOTION, FakeServe, make_workspace

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _emotion(config: dict) -> dict:
    return config_deployments(config)["Emotion"]["user_config"]


def _history(store_uri: str) -> list:
    store = open_store(store_uri)
    try:
        return store.rollout_events("emotion", limit=100)
    finally:
        store.close()


def _accept_rollout_fields(deployment: str, user_config: dict) -> None:
    """Until every deployment's user_config model carries the rollout fields, the end-to-end
    tests check the rollout fields only (the real validator is tested on its own below)."""
    plan.rollout_of(user_config)


@pytest.fixture
def serve(config_path) -> FakeServe:
    return FakeServe(ServeConfigFile.load(config_path).deploy_config())


@pytest.fixture
def ws(config_path, store_uri, serve):
    return make_workspace(config_path, store_uri, serve, validate=_accept_rollout_fields)


def test_a_canary_is_deployed_then_written_then_recorded(ws, serve, config_path, store_uri):
    planner = partial(plan.plan_canary, version="v3", percent=50, now=T0)
    result = apply_change(ws, "emotion", planner, reason="try v3", poll_s=0)
    # Serve got the whole config, with the canary.
    assert len(serve.deployed) == 1
    assert _emotion(serve.deployed[0])["canary"]["version"] == "v3"
    # Both applications, as a `serve deploy` of the file would send them.
    assert [a["name"] for a in serve.deployed[0]["applications"]] == ["tutor", "emotion"]
    # The file says the same.
    written = ServeConfigFile.load(config_path).deploy_config()
    assert _emotion(written) == _emotion(serve.deployed[0])
    # The history has the event.
    (recorded,) = _history(store_uri)
    assert (recorded.action, recorded.from_version, recorded.to_version) == (
        "canary",
        SERVED_EMOTION,
        "v3",
    )
    assert (recorded.percent, recorded.reason, recorded.actor) == (50, "try v3", "cli:test")
    assert result.event == recorded and result.waited


def test_promote_then_rollback_walks_the_history(ws, serve, config_path, store_uri):
    apply_change(ws, "emotion", partial(plan.plan_canary, version="v3", percent=20, now=T0))
    apply_change(ws, "emotion", partial(plan.plan_promote, version="v3"))
    uc = _emotion(ServeConfigFile.load(config_path).deploy_config())
    assert uc["model_version"] == "v3" and "canary" not in uc
    apply_change(ws, "emotion", plan.plan_rollback)
    uc = _emotion(ServeConfigFile.load(config_path).deploy_config())
    assert uc["model_version"] == SERVED_EMOTION
    assert _emotion(serve.running) == uc
    assert [e.action for e in _history(store_uri)] == ["canary", "promote", "rollback"]
    with pytest.raises(RefusedError, match=f"no champion before {SERVED_EMOTION}"):
        apply_change(ws, "emotion", plan.plan_rollback)


REFUSALS = [
    ("emotion", partial(plan.plan_promote, version="v9"), "no version 'v9'"),
    (
        "emotion",
        partial(plan.plan_canary, version=SERVED_EMOTION, percent=10, now=T0),
        "is the champion",
    ),
    ("emotion", partial(plan.plan_canary, version="v3", percent=100, now=T0), "below 100"),
    ("emotion", plan.plan_rollback, f"no champion before {SERVED_EMOTION}"),
    ("emotion", plan.plan_end_shadow, "no shadow running"),
    ("sentiment", plan.plan_rollback, "unknown model 'sentiment'"),
    ("difficulty", partial(plan.plan_promote, version="v5"), "already the champion"),
]


@pytest.mark.parametrize(("model", "planner", "message"), REFUSALS)
def test_a_refused_change_changes_nothing(
    ws, serve, config_path, store_uri, model, planner, message
):
    original = config_path.read_bytes()
    with pytest.raises(RefusedError, match=message):
        apply_change(ws, model, planner)
    assert config_path.read_bytes() == original
    assert serve.deployed == []
    assert _history(store_uri) == []


def test_a_user_config_the_deployment_would_reject_is_refused_before_deploying(
    config_path, store_uri, serve
):
    def reject(deployment, user_config):
        raise RefusedError(f"{deployment}'s user_config would be refused: canary: not allowed")

    ws = make_workspace(config_path, store_uri, serve, validate=reject)
    original = config_path.read_bytes()
    with pytest.raises(RefusedError, match="would be refused"):
        apply_change(ws, "emotion", partial(plan.plan_canary, version="v3", percent=5, now=T0))
    assert config_path.read_bytes() == original and serve.deployed == []


def test_the_deployments_own_user_config_model_is_the_check():
    validate_user_config("Emotion", {"model_version": "v3", "max_batch_size": 32})
    with pytest.raises(RefusedError, match="Emotion's user_config would be refused.*max_batch"):
        validate_user_config("Emotion", {"model_version": "v3", "max_batch_size": 0})


def test_an_app_that_is_not_running_is_not_touched(config_path, store_uri):
    serve = FakeServe(ServeConfigFile.load(config_path).deploy_config(), app_status="DEPLOYING")
    ws = make_workspace(config_path, store_uri, serve, validate=_accept_rollout_fields)
    original = config_path.read_bytes()
    with pytest.raises(ApplyError, match="DEPLOYING, not RUNNING"):
        apply_change(ws, "emotion", partial(plan.plan_promote, version="v3"))
    assert serve.deployed == [] and config_path.read_bytes() == original
    assert _history(store_uri) == []


def test_a_change_serve_fails_is_undone(config_path, store_uri):
    before = ServeConfigFile.load(config_path).deploy_config()
    serve = FakeServe(before, reject=lambda running: "canary" in _emotion(running))
    ws = make_workspace(config_path, store_uri, serve, validate=_accept_rollout_fields)
    original = config_path.read_bytes()
    with pytest.raises(DeployFailedError, match="reconfigure.*previous config was deployed"):
        apply_change(ws, "emotion", partial(plan.plan_canary, version="v3", percent=5, now=T0))
    assert len(serve.deployed) == 2  # the change, then what ran before
    assert _emotion(serve.running) == _emotion(before)
    assert config_path.read_bytes() == original and _history(store_uri) == []


def test_a_change_that_does_not_show_up_in_time_writes_nothing(config_path, store_uri):
    serve = FakeServe(ServeConfigFile.load(config_path).deploy_config(), stuck=True)
    ws = make_workspace(config_path, store_uri, serve, validate=_accept_rollout_fields)
    original = config_path.read_bytes()
    with pytest.raises(ApplyTimeoutError, match="not applied after"):
        apply_change(ws, "emotion", partial(plan.plan_promote, version="v3"), timeout_s=0)
    assert config_path.read_bytes() == original and _history(store_uri) == []


def test_no_wait_writes_once_serve_accepted_the_request(config_path, store_uri):
    serve = FakeServe(ServeConfigFile.load(config_path).deploy_config(), stuck=True)
    ws = make_workspace(config_path, store_uri, serve, validate=_accept_rollout_fields)
    result = apply_change(ws, "emotion", partial(plan.plan_promote, version="v3"), wait=False)
    assert not result.waited and len(serve.deployed) == 1
    assert _emotion(ServeConfigFile.load(config_path).deploy_config())["model_version"] == "v3"


def test_waiting_looks_for_the_new_user_config_not_just_running():
    """Right after the request Serve may still report the old target as RUNNING."""
    old = {"model_version": "v4"}
    new = {"model_version": "v3"}
    answers = iter([old, old, new])

    class Client:
        polls = 0

        def get_serve_details(self):
            Client.polls += 1
            uc = next(answers)
            deployment = {"status": "HEALTHY", "deployment_config": {"user_config": uc}}
            return {
                "applications": {
                    "emotion": {"status": "RUNNING", "deployments": {"Emotion": deployment}}
                }
            }

    wait_applied(
        Client(),
        app="emotion",
        deployment="Emotion",
        user_config=new,
        timeout_s=5,
        sleep=lambda s: None,
    )
    assert Client.polls == 3
