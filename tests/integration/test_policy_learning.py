"""The policy learns through the API alone and keeps what it learned when the whole application
restarts: the only thing the two runs share is the store file.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.serve_process import (
    TEST_INGRESS_DRAIN,
    free_port,
    serve_running,
    write_config,
)

pytestmark = pytest.mark.integration

REWARDED = "analogy"
LEARNERS = [f"learner-{uuid.uuid4().hex[:6]}" for _ in range(12)]
MESSAGES = [
    "I don't get why the denominator stays the same",
    "this is so frustrating, I keep getting it wrong",
    "oh interesting, what happens with negative numbers?",
    "ok next one",
]


@pytest.fixture(scope="module")
def app_factory(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("policy")
    ray_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    port = free_port()
    config = write_config(
        tmp / "serve_config.yaml", port=port, store_uri=f"sqlite:///{tmp / 'tutor.db'}"
    )

    def start(run: int):
        log_path = tmp / f"serve-{run}.log"
        return serve_running(
            config,
            port=port,
            log_path=log_path,
            env={"RAY_TMPDIR": str(ray_dir), **TEST_INGRESS_DRAIN},
        )

    yield start
    shutil.rmtree(ray_dir, ignore_errors=True)


def _turns(client: httpx.Client, count: int, *, reward: bool) -> list[str]:
    chosen = []
    for i in range(count):
        body = {"learner_id": LEARNERS[i % len(LEARNERS)], "message": MESSAGES[i % len(MESSAGES)]}
        response = client.post("/v1/tutor", json=body)
        assert response.status_code == 200, response.text
        turn = response.json()
        assert turn["degraded"] == [], turn["degraded"]
        chosen.append(turn["strategy"]["name"])
        if reward:
            value = 1.0 if chosen[-1] == REWARDED else 0.0
            feedback = client.post(
                "/v1/feedback", json={"turn_id": turn["turn_id"], "reward": value}
            )
            assert feedback.status_code == 200, feedback.text
    return chosen


def test_policy_learns_from_feedback_and_keeps_it_after_a_restart(app_factory):
    with app_factory(1) as url, httpx.Client(base_url=url, timeout=60) as client:
        chosen = _turns(client, 150, reward=True)
    assert len(set(chosen[:30])) >= 3, chosen[:30]  # it explored
    assert chosen[-50:].count(REWARDED) >= 35, chosen[-50:]

    with app_factory(2) as url, httpx.Client(base_url=url, timeout=60) as client:
        after = _turns(client, 30, reward=False)
        profile = client.get(f"/v1/learners/{LEARNERS[0]}").json()
    assert after.count(REWARDED) >= 21, after
    assert profile["preferred_strategy"] == REWARDED
    assert profile["strategies"][REWARDED]["mean_reward"] == 1.0
