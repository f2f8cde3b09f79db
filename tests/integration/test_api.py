"""The whole application over HTTP, started once for this module exactly as `make serve` does.

The router's one provider points at a closed loopback port with its key set, so every reply
exercises the fallback to the offline responder (no network is reachable from CI anyway).
The same start also shows that every socket of the application binds loopback (it was a module
of its own, test_sockets.py, with an application start of its own: ~1 min of `make test`).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from deployments.config import config_deployments
from models.common.vocab import LEARNING_STATES, STRATEGIES
from tests.support import listening
from tests.support.api_properties import check_generated_requests
from tests.support.serve_process import (
    DEFAULT_CONFIG,
    TEST_INGRESS_DRAIN,
    free_port,
    serve_running,
    write_config,
)

pytestmark = pytest.mark.integration


def _configured_version(deployment: str) -> str:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    return config_deployments(config)[deployment]["user_config"]["model_version"]


EMOTION_VERSION = _configured_version("Emotion")
DIFFICULTY_VERSION = _configured_version("Difficulty")

CANDIDATES = [
    {"item_id": "1366", "skill_id": "9"},
    {"item_id": "2985", "skill_id": "15"},
    {"item_id": "never-seen-item", "skill_id": "9"},
]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory, ray_dir):
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    dead_port = free_port()  # nothing listens here: the provider fails to connect
    config = write_config(
        tmp / "serve_config.yaml",
        port=port,
        store_uri=f"sqlite:///{tmp / 'tutor.db'}",
        deployment_overrides={
            "LLMRouter": {
                "providers": [
                    {
                        "name": "unreachable",
                        "base_url": f"http://127.0.0.1:{dead_port}/v1",
                        "model": "stub",
                        "api_key_env": "TUTOR_TEST_PROVIDER_KEY",
                        "timeout_s": 2,
                    }
                ]
            }
        },
    )
    env = {
        "TUTOR_TEST_PROVIDER_KEY": "sk-test-secret-never-logged",
        "RAY_TMPDIR": str(ray_dir),
        **TEST_INGRESS_DRAIN,
    }
    with serve_running(config, port=port, log_path=tmp / "serve.log", env=env) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=60) as http:
        yield http


def _learner() -> str:
    return f"learner-{uuid.uuid4().hex[:8]}"


def test_health_reports_every_deployment_store_and_versions(client):
    response = client.get("/healthz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["deployments"]) == {
        "Ingress",
        "Emotion",
        "Difficulty",
        "Personalization",
        "LLMRouter",
    }
    assert body["store"]["ok"] is True
    assert body["model_versions"]["emotion"] == EMOTION_VERSION
    assert body["model_versions"]["difficulty"] == DIFFICULTY_VERSION
    assert list(body["providers"]) == ["unreachable"]
    assert body["providers"]["unreachable"]["configured"] is True


def test_tutor_turn_returns_reply_state_strategy_and_timings(client):
    learner = _learner()
    response = client.post(
        "/v1/tutor",
        json={
            "learner_id": learner,
            "message": "I don't get fractions at all, this is so confusing",
            "candidates": CANDIDATES,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["new_learner"] is True
    assert body["reply"]
    emotion = body["learner_state"]["emotion"]
    assert emotion["state"] in LEARNING_STATES
    assert sum(emotion["states"].values()) == pytest.approx(1.0, abs=1e-3)
    assert len(emotion["goemotions"]["scores"]) == 28
    difficulty = body["learner_state"]["difficulty"]
    assert [p["item_id"] for p in difficulty["predictions"]] == [c["item_id"] for c in CANDIDATES]
    assert difficulty["recommended"]["item_id"] in {c["item_id"] for c in CANDIDATES}
    assert "cold_start" in difficulty["predictions"][0]["flags"]
    assert difficulty["predictions"][0]["basis"] == "population"
    assert "unseen_item" in difficulty["predictions"][2]["flags"]
    assert body["strategy"]["name"] in STRATEGIES
    assert 0 < body["strategy"]["propensity"] <= 1
    # The configured provider is unreachable: the offline responder answered, and says so.
    assert body["llm"]["provider"] == "offline"
    # A refused connection is transient: tried again once, after the other providers (none).
    attempts = [(a["provider"], a["outcome"]) for a in body["llm"]["attempts"]]
    assert attempts == [("unreachable", "error"), ("unreachable", "error"), ("offline", "ok")]
    assert body["reply"].startswith("[offline tutor")
    assert {"load", "emotion", "difficulty", "personalization", "reply", "total"} <= set(
        body["timings_ms"]
    )
    assert body["model_versions"]["emotion"] == EMOTION_VERSION
    assert body["degraded"] == []


def test_health_shows_a_failing_provider_with_its_breaker_open(client):
    # Three failures in a row open the breaker (breaker_failure_threshold in serve_config.yaml);
    # a turn the open breaker skips leaves it open.
    for _ in range(3):
        turn = client.post("/v1/tutor", json={"learner_id": _learner(), "message": "hi"})
        assert turn.status_code == 200, turn.text
    body = client.get("/healthz").json()
    unreachable = body["providers"]["unreachable"]
    assert unreachable["breaker"] == "open"
    assert 0 < unreachable["retry_in_s"] <= 30
    assert unreachable["error_rate"] > 0
    assert unreachable["ttft_ms"] is None  # it never answered
    assert body["status"] == "ok"  # the offline responder still answers every turn
    assert body["deployments"]["LLMRouter"]["detail"].startswith("0 of 1 providers usable")


def test_turn_id_makes_a_retry_idempotent(client):
    learner, turn_id = _learner(), f"turn-{uuid.uuid4().hex}"
    payload = {
        "learner_id": learner,
        "message": "Why is 1/2 bigger than 1/3?",
        "turn_id": turn_id,
        "answer": {"item_id": "1366", "skill_id": "9", "correct": True},
    }
    first = client.post("/v1/tutor", json=payload).json()
    second = client.post("/v1/tutor", json=payload).json()
    assert first["turn_id"] == second["turn_id"] == turn_id
    assert first["reply"] == second["reply"]
    profile = client.get(f"/v1/learners/{learner}").json()
    assert profile["turn_count"] == 1
    assert profile["answer_count"] == 1
    other = client.post("/v1/tutor", json={**payload, "learner_id": _learner()})
    assert other.status_code == 409


def test_streaming_sends_state_then_tokens_then_summary(client):
    learner = _learner()
    events = []
    with client.stream(
        "POST",
        "/v1/tutor",
        json={
            "learner_id": learner,
            "message": "Oh wow, I finally get it!",
            "stream": True,
            "candidates": CANDIDATES[:2],
        },
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[len("data: ") :])))
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "state" and kinds[-1] == "summary"
    assert set(kinds[1:-1]) == {"token"}
    summary = events[-1][1]
    assert "".join(data["text"] for kind, data in events if kind == "token") == summary["reply"]
    assert events[0][1]["turn_id"] == summary["turn_id"]
    assert events[0][1]["learner_state"]["emotion"]["state"] in LEARNING_STATES
    stored = client.get(f"/v1/learners/{learner}").json()
    assert stored["turn_count"] == 1
    # A retried streaming turn replays the stored turn as the same kinds of event.
    replay = client.post(
        "/v1/tutor",
        json={
            "learner_id": learner,
            "message": "Oh wow, I finally get it!",
            "stream": True,
            "turn_id": summary["turn_id"],
        },
    )
    assert replay.text.count("event: token") == 1
    assert json.dumps(summary["reply"]) in replay.text


def test_emotion_endpoint_batches_texts(client):
    texts = ["I'm so frustrated, nothing works", "Interesting! How does that work?", "ok"]
    response = client.post("/v1/emotion", json={"texts": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == EMOTION_VERSION
    assert len(body["results"]) == 3
    for result in body["results"]:
        assert result["state"] in LEARNING_STATES
        assert 0 <= result["confidence"] <= 1
        assert set(result["goemotions"]["predicted"]) <= set(result["goemotions"]["scores"])


def test_emotion_is_answered_by_the_emotion_application_at_both_spellings(client):
    """POST /v1/emotion reaches the Emotion replicas straight (the emotion application), as
    /v1/emotion/ does (the path its OpenAPI document names); a version not in service is 409."""
    for path in ("/v1/emotion", "/v1/emotion/"):
        response = client.post(path, json={"texts": ["I give up"]}, follow_redirects=False)
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == EMOTION_VERSION
    unknown = client.post("/v1/emotion", json={"texts": ["hi"], "model_version": "v999"})
    assert unknown.status_code == 409, unknown.text
    assert unknown.json()["error"]["code"] == "conflict" and unknown.json()["error"]["request_id"]
    spec = client.get("/v1/emotion/openapi.json").json()
    assert list(spec["paths"]) == ["/"] and spec["servers"] == [{"url": "/v1/emotion"}]


def test_difficulty_with_history_and_trace(client):
    history = [
        {"item_id": "1366", "skill_id": "9", "correct": True},
        {"item_id": "1424", "skill_id": "9", "correct": False},
        {"item_id": "2985", "skill_id": "15", "correct": True},
    ]
    response = client.post(
        "/v1/difficulty",
        json={
            "history": history,
            "candidates": CANDIDATES + [{"item_id": "x", "skill_id": "no-such-skill"}],
            "trace": True,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["trace"]) == len(history)
    assert body["history_length"] == 3
    assert "unseen_skill" in body["predictions"][-1]["flags"]
    assert body["predictions"][-1]["basis"] == "global_prior"
    assert body["predictions"][0]["basis"] == "model"
    assert all(0 <= p["p_correct"] <= 1 for p in body["predictions"])


def test_difficulty_reads_stored_history_by_learner_id(client):
    learner = _learner()
    client.post(
        "/v1/tutor",
        json={
            "learner_id": learner,
            "message": "done",
            "answer": {"item_id": "1366", "skill_id": "9", "correct": True},
        },
    )
    response = client.post("/v1/difficulty", json={"learner_id": learner, "candidates": CANDIDATES})
    assert response.json()["history_length"] == 1


def test_feedback_is_idempotent_and_unknown_turns_are_404(client):
    learner = _learner()
    turn = client.post("/v1/tutor", json={"learner_id": learner, "message": "hi"}).json()
    first = client.post("/v1/feedback", json={"turn_id": turn["turn_id"], "reward": 1.0})
    assert first.status_code == 200, first.text
    assert first.json() == {
        "turn_id": turn["turn_id"],
        "accepted": True,
        "reward": 1.0,
        "strategy": turn["strategy"]["name"],
        "queued": False,  # stored already: applied now, not journaled
    }
    again = client.post("/v1/feedback", json={"turn_id": turn["turn_id"], "reward": 0.0})
    assert again.json()["accepted"] is False
    assert again.json()["reward"] == 1.0
    missing = client.post("/v1/feedback", json={"turn_id": "no-such-turn", "reward": 1.0})
    assert missing.status_code == 404
    assert "no-such-turn" in missing.json()["error"]["message"]
    profile = client.get(f"/v1/learners/{learner}").json()
    stats = profile["strategies"][turn["strategy"]["name"]]
    assert stats == {"count": 1, "rewarded": 1, "mean_reward": 1.0}


def test_learner_profile(client):
    learner = _learner()
    for i, correct in enumerate([True, False, True]):
        client.post(
            "/v1/tutor",
            json={
                "learner_id": learner,
                "message": f"attempt {i}",
                "answer": {"item_id": str(1366 + i), "skill_id": "9", "correct": correct},
            },
        )
    response = client.get(f"/v1/learners/{learner}")
    assert response.status_code == 200, response.text
    profile = response.json()
    assert profile["turn_count"] == 3
    assert profile["answer_count"] == 3
    assert [m["skill_id"] for m in profile["mastery"]] == ["9"]
    assert profile["mastery"][0]["attempts"] == 3
    assert sum(profile["emotion_trend"].values()) == pytest.approx(1.0, abs=1e-2)
    assert sum(s["count"] for s in profile["strategies"].values()) == 3
    # Each answer rewarded the turn before it: turn 1 with turn 2's wrong answer, turn 2 with
    # turn 3's right one.
    rewards = [s for s in profile["strategies"].values() if s["rewarded"]]
    assert sum(s["rewarded"] for s in rewards) == 2
    assert sum(s["mean_reward"] * s["rewarded"] for s in rewards) == pytest.approx(1.0)
    assert profile["pace"]["sessions"] == 1
    assert 0 <= profile["pace"]["median_s_between_turns"] < 60
    assert profile["preferred_strategy"] in STRATEGIES
    assert client.get(f"/v1/learners/{_learner()}").status_code == 404


def test_openai_sdk_lists_the_model_and_gets_completions(base_url, client):
    import openai

    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-needed", max_retries=0)
    assert [m.id for m in sdk.models.list()] == ["tutor"]
    learner = _learner()
    messages = [
        {"role": "system", "content": "ignored: the tutor writes its own system prompt"},
        {"role": "user", "content": "I don't get why 1/2 is bigger than 1/3"},
    ]
    completion = sdk.chat.completions.create(model="tutor", messages=messages, user=learner)
    reply = completion.choices[0].message.content
    assert reply and completion.choices[0].finish_reason == "stop"
    assert completion.model_extra["tutor"]["strategy"] in STRATEGIES

    stream = sdk.chat.completions.create(
        model="tutor", messages=messages, user=learner, stream=True
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    summary = chunks[-1].model_extra["tutor"]
    # The streamed text is exactly what the turn stored (a replay by turn_id returns it).
    stored = client.post(
        "/v1/tutor",
        json={"learner_id": learner, "message": "x", "turn_id": summary["turn_id"]},
    ).json()
    assert streamed == stored["reply"]
    assert client.get(f"/v1/learners/{learner}").json()["turn_count"] == 2


@pytest.mark.parametrize(
    "body",
    [
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "user": "l1"},
        {"model": "tutor", "messages": [{"role": "user", "content": "hi"}]},
        {"model": "tutor", "messages": [{"role": "system", "content": "hi"}], "user": "l1"},
        {"model": "tutor", "messages": [], "user": "l1"},
    ],
)
def test_chat_completions_refuse_what_the_tutor_cannot_answer(client, body):
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"]


def test_request_id_is_echoed(client):
    response = client.post(
        "/v1/emotion", json={"texts": ["hello"]}, headers={"X-Request-ID": "req-abc-123"}
    )
    assert response.headers.get("x-request-id") == "req-abc-123"


def test_request_id_is_on_the_log_lines_of_every_stage(client, ray_dir):
    logs = ray_dir / "ray" / "session_latest" / "logs" / "serve"
    request_id = f"req-{uuid.uuid4().hex}"
    client.post(
        "/v1/tutor",
        json={"learner_id": _learner(), "message": "hello", "candidates": CANDIDATES},
        headers={"X-Request-ID": request_id},
    )
    time.sleep(1.0)  # replica logs are flushed asynchronously
    lines = [
        (path.name, line)
        for app in ("tutor", "emotion")  # Emotion's replicas are the emotion application's
        for path in logs.glob(f"replica_{app}_*.log")
        for line in path.read_text(errors="replace").splitlines()
        if request_id in line
    ]
    deployments = {name.split("_")[2] for name, _ in lines}
    assert {"Ingress", "Emotion", "Difficulty", "Personalization", "LLMRouter"} <= deployments
    assert any("turn " in line and "strategy=" in line for _, line in lines)


def _scrape_ray_metrics(ray_dir: Path) -> str:
    discovery = ray_dir / "ray" / "session_latest" / "prom_metrics_service_discovery.json"
    targets = json.loads(discovery.read_text())[0]["targets"]
    texts = []
    for target in targets:
        port = target.rsplit(":", 1)[1]  # the agents listen on all interfaces: ask loopback
        try:
            texts.append(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
        except httpx.HTTPError:
            continue  # not every agent answers at every moment
    return "\n".join(texts)


def test_turn_metrics_reach_prometheus(client, ray_dir):
    client.post("/v1/tutor", json={"learner_id": _learner(), "message": "hello"})
    deadline = time.monotonic() + 60  # Ray exports metrics every few seconds
    wanted = (
        "ray_tutor_turns_total",
        "ray_tutor_stage_latency_ms_bucket",
        "ray_tutor_learning_state_total",
        "ray_tutor_strategy_total",
    )
    while time.monotonic() < deadline:
        scraped = _scrape_ray_metrics(ray_dir)
        if all(name in scraped for name in wanted):
            break
        time.sleep(2)
    missing = [name for name in wanted if name not in scraped]
    assert not missing, f"not exported: {missing}"
    assert 'stage="emotion"' in scraped


BAD_REQUESTS = [
    ("post", "/v1/tutor", "{not json", "not valid JSON"),
    ("post", "/v1/tutor", {"learner_id": "a", "message": ""}, "message"),
    ("post", "/v1/tutor", {"learner_id": "a", "message": "x" * 4001}, "message"),
    ("post", "/v1/tutor", {"learner_id": "bad id!", "message": "hi"}, "learner_id"),
    ("post", "/v1/tutor", {"learner_id": "a" * 129, "message": "hi"}, "learner_id"),
    ("post", "/v1/tutor", {"message": "hi"}, "learner_id"),
    ("post", "/v1/tutor", {"learner_id": "a", "message": "hi", "mood": "x"}, "mood"),
    ("post", "/v1/tutor", {"learner_id": "a", "message": 5}, "message"),
    (
        "post",
        "/v1/tutor",
        {
            "learner_id": "a",
            "message": "hi",
            "candidates": [{"item_id": "1", "skill_id": "1"}] * 101,
        },
        "candidates",
    ),
    (
        "post",
        "/v1/tutor",
        {"learner_id": "a", "message": "hi", "answer": {"item_id": "1", "skill_id": "1"}},
        "correct",
    ),
    ("post", "/v1/tutor", [1, 2, 3], "body"),
    ("post", "/v1/emotion", {"texts": []}, "texts"),
    ("post", "/v1/emotion", {"texts": ["a"] * 65}, "texts"),
    ("post", "/v1/emotion", {"texts": [""]}, "texts"),
    ("post", "/v1/difficulty", {"candidates": []}, "candidates"),
    (
        "post",
        "/v1/difficulty",
        {
            "candidates": [{"item_id": "1", "skill_id": "1"}],
            "history": [{"item_id": "1", "skill_id": "1", "correct": True}] * 1001,
        },
        "history",
    ),
    ("post", "/v1/feedback", {"turn_id": "t"}, "reward"),
    ("post", "/v1/feedback", {"turn_id": "t", "reward": 1.5}, "reward"),
    ("post", "/v1/feedback", {"turn_id": "t", "reward": -0.1}, "reward"),
    ("get", "/v1/learners/" + "a" * 129, None, "learner_id"),
    ("get", "/v1/learners/bad%20id", None, "learner_id"),
    ("get", "/v1/nowhere", None, "Not Found"),
]


@pytest.mark.parametrize(("method", "path", "payload", "mentions"), BAD_REQUESTS)
def test_bad_input_is_a_clear_4xx(client, method, path, payload, mentions):
    if method == "get":
        response = client.get(path)
    elif isinstance(payload, str):
        response = client.post(path, content=payload, headers={"content-type": "application/json"})
    else:
        response = client.post(path, json=payload)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert mentions in error["message"] + json.dumps(error["fields"])


# ---- property-based: whatever a client sends, the answer is never a 5xx ----------------------


def test_generated_requests_get_documented_answers_and_no_server_error(base_url):
    check_generated_requests(base_url)


# ---- nothing listens where it need not ---------------------------------------------------------

# Processes that must be among the owners, or the test looked at the wrong tree: Ray's GCS and
# raylet, the dashboard's agent, HAProxy in front of the API, and Serve's replicas.
EXPECTED_OWNERS = ("gcs_server", "raylet", "DashboardAgent", "haproxy", "ServeReplica")


def test_every_socket_of_the_app_binds_loopback(client, base_url, ray_dir):
    """This module's processes: those in the session of the process that serves its port
    (serve_process starts `serve run` in a session of its own, and Ray's processes, HAProxy
    included, stay in it) plus any process whose command line names its Ray temp dir."""
    # A turn first, so that the replicas' data plane (gRPC between them) is in use, not only up.
    turn = client.post(
        "/v1/tutor",
        json={"learner_id": _learner(), "session_id": "s1", "message": "fractions again"},
    )
    assert turn.status_code == 200, turn.text

    port = httpx.URL(base_url).port
    pids = listening.session_pids(listening.session_of_listener(port))
    pids |= listening.pids_mentioning(str(ray_dir))
    found = listening.listeners(pids)

    owners = " ".join(item.name for item in found)
    missing = [name for name in EXPECTED_OWNERS if name not in owners]
    assert not missing, f"no socket of {missing} among: {[str(item) for item in found]}"
    exposed = [str(item) for item in found if not (item.loopback or _haproxy_log_sender(item))]
    assert exposed == [], (
        f"{len(exposed)} of {len(found)} sockets bind beyond loopback: {exposed}; "
        f"by bind address: {listening.summary(found)}"
    )


def _haproxy_log_sender(item: listening.Listener) -> bool:
    """HAProxy's UDP sockets for its access log (RAY_SERVE_HAPROXY_LOG_TARGET, 127.0.0.1:514 by
    default): the kernel binds them to 0.0.0.0 on HAProxy's first send, and HAProxy never reads
    from them. A unix-socket log target (e.g. /dev/log) has none (README "Ports and what
    listens"). Every TCP socket of HAProxy is held to loopback like the rest."""
    return item.protocol == "udp" and item.name == "haproxy"
