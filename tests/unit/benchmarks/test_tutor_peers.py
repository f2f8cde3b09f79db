"""The tutor turn's reference servers (benchmarks/peers/): the single-process monolith answers a
real turn in process (no server started), and the no-op floor graph mirrors the app's shape
(its config and its turn, without starting Serve)."""

from __future__ import annotations

import httpx
import pytest
import yaml

from benchmarks.peers.monolith_app import (
    HTTP_ONLY_PATH,
    InProcessHandle,
    build_runner,
    create_app,
)
from benchmarks.peers.tutor_floor import FLOOR_DEPLOYMENTS, FLOOR_IMPORT_PATH, floor_config
from benchmarks.peers.tutor_floor_app import (
    FloorDifficulty,
    FloorEmotion,
    FloorPersonalization,
    FloorRouter,
    build_app,
    floor_turn,
)
from benchmarks.run import _tutor_request
from deployments.config import AppArgs, config_deployments, config_placement
from deployments.schemas import TutorRequest, TutorResponse
from store import open_store
from tests.support.serve_process import DEFAULT_CONFIG, served_version


@pytest.fixture(scope="module")
def monolith(tmp_path_factory):
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('monolith')}/tutor.db")
    return create_app(build_runner(store)), store


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://monolith")


async def test_the_monolith_answers_a_turn_and_stores_it(monolith):
    app, store = monolith
    _, path, body = _tutor_request(0, 1)
    async with _client(app) as client:
        response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    turn = response.json()
    assert turn["reply"]
    assert turn["learner_state"]["emotion"]["state"]
    assert turn["learner_state"]["difficulty"]["recommended"]["item_id"]
    assert turn["strategy"]["name"]
    # The served versions (serve_config.yaml), and the offline responder with no provider key.
    assert turn["model_versions"] == {
        name.lower(): served_version(name) for name in ("Emotion", "Difficulty", "Personalization")
    }
    assert turn["llm"]["provider"] == "offline"
    assert turn["degraded"] == []
    stored = store.get_turn(turn["turn_id"])
    assert stored is not None and stored.learner_id == body["learner_id"]


async def test_the_monolith_http_only_route_answers_the_same_shape_and_stores_nothing(monolith):
    app, store = monolith
    _, _, body = _tutor_request(7, 1)
    async with _client(app) as client:
        response = await client.post(HTTP_ONLY_PATH, json=body)
        refused = await client.post(HTTP_ONLY_PATH, json={"learner_id": "x"})
    assert response.status_code == 200, response.text
    turn = TutorResponse.model_validate(response.json())
    assert turn.learner_id == body["learner_id"] and turn.reply
    assert len(turn.learner_state.difficulty.predictions) == len(body["candidates"])
    assert store.get_turn(turn.turn_id) is None  # no work: not even the store's
    assert refused.status_code == 422  # the same validation as the real route


async def test_the_monolith_refuses_a_bad_body(monolith):
    app, _ = monolith
    async with _client(app) as client:
        response = await client.post("/v1/tutor", json={"learner_id": "x"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


def test_the_floor_config_keeps_the_apps_deployments_placement_and_limits():
    base = yaml.safe_load(DEFAULT_CONFIG.read_text())
    floor = floor_config(base, port=18123)
    assert floor["http_options"]["port"] == 18123
    (app,) = floor["applications"]
    assert app["import_path"] == FLOOR_IMPORT_PATH
    real = config_deployments(base)  # the tutor's and the emotion application's
    assert [d["name"] for d in app["deployments"]] == list(FLOOR_DEPLOYMENTS)
    for deployment in app["deployments"]:
        expected = {k: v for k, v in real[deployment["name"]].items() if k != "user_config"}
        assert deployment == expected
    placement = config_placement(base)
    args = AppArgs.model_validate(app["args"])
    for name in FLOOR_DEPLOYMENTS:
        options = args.actor_options(name, use_gpu=False)
        assert options == placement[name]["ray_actor_options"]


def test_the_floor_graph_binds_without_a_cluster():
    base = yaml.safe_load(DEFAULT_CONFIG.read_text())
    args = floor_config(base, port=18123)["applications"][0]["args"]
    assert build_app(args) is not None


class _FloorHandles:
    emotion = InProcessHandle(FloorEmotion())
    difficulty = InProcessHandle(FloorDifficulty())
    personalization = InProcessHandle(FloorPersonalization())
    router = InProcessHandle(FloorRouter())


async def test_the_floor_turn_answers_the_tutors_shape():
    _, _, body = _tutor_request(0, 1)
    response = await floor_turn(_FloorHandles(), TutorRequest.model_validate(body))
    assert response.learner_id == body["learner_id"]
    assert response.reply
    assert len(response.learner_state.emotion.goemotions.scores) == 28
    assert [p.item_id for p in response.learner_state.difficulty.predictions] == [
        c["item_id"] for c in body["candidates"]
    ]
    assert set(response.model_versions) == {"emotion", "difficulty", "personalization"}
