"""API keys, scopes, tenants, limits and the body limit on the real application, started with
TUTOR_AUTH=required and debug-level logs; keys made with `tutor keys` in a process of its own,
against the same store, as an operator does."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import httpx
import pytest
import yaml

from tests.support.api_properties import check_generated_requests
from tests.support.serve_process import (
    REPO_ROOT,
    TEST_INGRESS_DRAIN,
    free_port,
    serve_running,
    write_config,
)

pytestmark = pytest.mark.integration

PROVIDER_KEY = f"sk-fake-provider-{uuid.uuid4().hex}"
MARKER = f"marker-{uuid.uuid4().hex}"  # in a learner's message: it must reach no log
MAX_BODY = 16384
CACHE_TTL_S = 1.0


@pytest.fixture(scope="module")
def served(tmp_path_factory, ray_dir):
    tmp = tmp_path_factory.mktemp("serve")
    port, dead_port = free_port(), free_port()
    store_uri = f"sqlite:///{tmp / 'tutor.db'}"
    config = write_config(
        tmp / "serve_config.yaml",
        port=port,
        store_uri=store_uri,
        deployment_overrides={
            "Ingress": {"max_body_bytes": MAX_BODY, "key_cache_ttl_s": CACHE_TTL_S},
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
            },
        },
    )
    # Debug level for Serve's components and the application's logger ("ray.serve").
    raw = yaml.safe_load(config.read_text())
    raw["logging_config"] = {"log_level": "DEBUG"}
    for app in raw["applications"]:  # the tutor and the emotion application
        app["logging_config"] = {"log_level": "DEBUG"}
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {
        "TUTOR_AUTH": "required",
        "TUTOR_TEST_PROVIDER_KEY": PROVIDER_KEY,
        "RAY_TMPDIR": str(ray_dir),
        **TEST_INGRESS_DRAIN,
    }
    with serve_running(config, port=port, log_path=tmp / "serve.log", env=env) as url:
        yield {"url": url, "store_uri": store_uri, "log": tmp / "serve.log", "keys": []}


def tutor_keys(served, *args: str) -> str:
    command = [sys.executable, "-m", "deployments.cli.main", "keys", *args]
    command += ["--store-uri", served["store_uri"]]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def new_key(served, name: str, scopes: str, *extra: str) -> str:
    key = tutor_keys(served, "create", "--name", name, "--scopes", scopes, *extra)
    key = key.strip().splitlines()[-1]
    served["keys"].append(key)
    return key


def client(served, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=served["url"], headers=headers, timeout=60)


def turn(http: httpx.Client, learner: str, message: str = "why is 1/2 > 1/3?", **extra):
    response = http.post("/v1/tutor", json={"learner_id": learner, "message": message, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["request_id"]
    return error


def test_no_key_or_a_bad_key_is_401_and_health_is_open(served):
    with client(served) as anonymous:
        response = anonymous.post("/v1/tutor", json={"learner_id": "x", "message": "hi"})
        _error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/openapi.json").status_code == 200
        # The emotion application answers /v1/emotion itself, behind the same gate.
        _error(anonymous.post("/v1/emotion", json={"texts": ["hi"]}), 401, "unauthorized")
        assert anonymous.get("/v1/emotion/openapi.json").status_code == 200
    with client(served, "tutor_not-a-key") as bad:
        _error(bad.get("/v1/models"), 401, "unauthorized")
        _error(bad.post("/v1/emotion", json={"texts": ["hi"]}), 401, "unauthorized")


def test_a_key_without_the_scope_is_403_and_with_it_200(served):
    tutor_only = new_key(served, "scopes-tutor", "tutor")
    both = new_key(served, "scopes-both", "tutor,learners:read")
    with client(served, tutor_only) as http:
        turn(http, "sam")
        assert http.post("/v1/emotion", json={"texts": ["hi"]}).status_code == 200
        error = _error(http.get("/v1/learners/sam"), 403, "forbidden")
        assert "learners:read" in error["message"]
    with client(served, both) as http:
        profile = http.get("/v1/learners/sam")
        assert profile.status_code == 200 and profile.json()["turn_count"] == 1


def test_tenants_see_only_their_own_learners_and_turns(served):
    a = new_key(served, "tenant-a", "tutor,learners:read", "--tenant", "a")
    b = new_key(served, "tenant-b", "tutor,learners:read", "--tenant", "b")
    with client(served, a) as http_a, client(served, b) as http_b:
        answered = turn(http_a, "alice", turn_id=f"t-{uuid.uuid4().hex}")
        assert answered["learner_id"] == "alice"  # the client's id, never the stored one
        assert http_a.get("/v1/learners/alice").json()["learner_id"] == "alice"
        _error(http_b.get("/v1/learners/alice"), 404, "not_found")
        # The same learner id in another tenant is another learner.
        turn(http_b, "alice")
        assert http_a.get("/v1/learners/alice").json()["turn_count"] == 1

        b_turn = turn(http_b, "bob")["turn_id"]
        feedback = http_a.post("/v1/feedback", json={"turn_id": b_turn, "reward": 1.0})
        assert "unknown turn_id" in _error(feedback, 404, "not_found")["message"]
        assert http_b.post("/v1/feedback", json={"turn_id": b_turn, "reward": 1.0}).is_success

        # Retrying A's turn_id from B answers nothing of A's turn.
        retry = http_b.post(
            "/v1/tutor",
            json={"learner_id": "alice", "message": "hi", "turn_id": answered["turn_id"]},
        )
        assert retry.status_code == 409
        assert answered["reply"] not in retry.text and "a/" not in retry.text

        # Streams and chat completions are scoped the same way.
        with http_b.stream(
            "POST", "/v1/tutor", json={"learner_id": "carol", "message": "hi", "stream": True}
        ) as stream:
            assert '"learner_id": "carol"' in stream.read().decode()
        chat = http_b.post(
            "/v1/chat/completions",
            json={
                "model": "tutor",
                "user": "dave",
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        assert chat.status_code == 200, chat.text
        assert http_b.get("/v1/learners/dave").json()["turn_count"] == 1
        _error(http_a.get("/v1/learners/dave"), 404, "not_found")


def test_past_the_keys_rpm_is_429_with_retry_after(served):
    key = new_key(served, "slow", "tutor", "--rpm", "3")
    with client(served, key) as http:
        assert [http.get("/v1/models").status_code for _ in range(3)] == [200] * 3
        response = http.get("/v1/models")
        _error(response, 429, "rate_limited")
        assert 1 <= int(response.headers["retry-after"]) <= 60


def test_a_body_past_the_limit_is_413_before_it_is_parsed(served):
    key = new_key(served, "big", "tutor")
    not_json = b"{" * (MAX_BODY + 1)  # not even JSON: a 413, never a 422
    headers = {"content-type": "application/json"}
    with client(served, key) as http:
        response = http.post("/v1/tutor", content=not_json, headers=headers)
        assert str(MAX_BODY) in _error(response, 413, "payload_too_large")["message"]
        small = http.post("/v1/tutor", content=b"{", headers=headers)
        _error(small, 422, "invalid_request")
    with client(served) as anonymous:  # checked before the key: no store lookup for it
        _error(anonymous.post("/v1/tutor", content=not_json), 413, "payload_too_large")


def test_a_revoked_key_is_refused_within_the_cache_ttl(served):
    key = new_key(served, "leaving", "tutor")
    with client(served, key) as http:
        assert http.get("/v1/models").status_code == 200
        tutor_keys(served, "revoke", "leaving")
        deadline = time.monotonic() + CACHE_TTL_S + 10  # the TTL, plus a margin for a slow box
        while http.get("/v1/models").status_code == 200:
            assert time.monotonic() < deadline, "the revoked key still works"
            time.sleep(0.2)
        _error(http.get("/v1/models"), 401, "unauthorized")
    listed = tutor_keys(served, "list")
    assert "leaving" in listed and key not in listed


def test_generated_requests_with_a_key_get_documented_answers_and_no_server_error(served):
    """The schemathesis property of test_api, with auth on and a key of both scopes."""
    key = new_key(served, "fuzz", "tutor,learners:read", "--rpm", "100000", "--max-turns", "64")
    bearer = {"Authorization": f"Bearer {key}"}
    check_generated_requests(served["url"], headers=bearer, max_examples=20)


def test_debug_logs_hold_no_key_no_provider_key_and_no_learner_message(served, ray_dir):
    key = new_key(served, "logged", "tutor,learners:read")
    with client(served, key) as http:
        turn(http, "erin", message=f"I am lost {MARKER}")
        with http.stream(
            "POST", "/v1/tutor", json={"learner_id": "erin", "message": MARKER, "stream": True}
        ) as stream:
            stream.read()
        chat = http.post(
            "/v1/chat/completions",
            json={
                "model": "tutor",
                "user": "erin",
                "messages": [{"role": "user", "content": MARKER}],
            },
        )
        assert chat.status_code == 200
        # Straight to the Emotion replica (the emotion application): its gate admits the key.
        assert http.post("/v1/emotion", json={"texts": [MARKER]}).status_code == 200
    time.sleep(2.0)  # replica logs are flushed asynchronously
    sessions = (ray_dir / "ray").glob("session_2*")  # session_latest links to one of them
    logs = [path for session in sessions for path in (session / "logs").rglob("*")]
    logs = [path for path in logs if path.is_file()]
    logs.append(served["log"])
    debug_lines = 0
    secrets = {
        "an API key": served["keys"],
        "the provider key": [PROVIDER_KEY],
        "a message": [MARKER],
    }
    for path in logs:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        debug_lines += text.count("DEBUG")
        for what, values in secrets.items():
            for value in values:
                assert value not in text, f"{what} is in {path}"
    assert debug_lines > 0, "the run did not log at debug level"
