"""Promote, canary, shadow and roll back a real version pair while 8 clients keep sending
turns: no request fails, every turn names the versions that served it, a learner keeps one
version during a canary, and the shadow's outputs are stored.

The changes go through the `tutor` command (a process of its own) and Serve's deploy path,
exactly as an operator runs them against `make serve`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import httpx
import pytest

from deployments.lifecycle.rollout import learner_bucket
from store.sqlite_store import SQLiteStore
from tests.support.serve_process import (
    TEST_INGRESS_DRAIN,
    dashboard_address,
    free_port,
    run_tutor,
    serve_running,
    served_version,
    write_config,
)

pytestmark = pytest.mark.integration
CLIENTS = 8
LEARNERS = [f"lifecycle-{i}" for i in range(48)]
CANARY_PERCENT = 30
CHAMPION = served_version("Emotion")  # the champion the canary (v3) runs beside
CANDIDATES = [{"item_id": "1366", "skill_id": "9"}, {"item_id": "2985", "skill_id": "15"}]
MESSAGES = ["I don't get why we flip the fraction.", "Oh, I think I see it now!", "ok next"]


@dataclass
class Sent:
    started: float
    learner: str
    status: int
    versions: dict[str, str]
    degraded: list[str]


class Load:
    """CLIENTS threads sending turns (with an answer to the previous exercise) until stopped."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.sent: list[Sent] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(c,)) for c in range(CLIENTS)]

    def _client(self, index: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60) as client:
            i = 0
            while not self._stop.is_set():
                learner = LEARNERS[(index + CLIENTS * i) % len(LEARNERS)]
                body = {
                    "learner_id": learner,
                    "message": MESSAGES[i % len(MESSAGES)],
                    "candidates": CANDIDATES,
                    "answer": {**CANDIDATES[i % 2], "correct": i % 3 != 0},
                }
                started = time.time()
                try:
                    response = client.post("/v1/tutor", json=body)
                    status = response.status_code
                    payload = response.json() if status == 200 else {}
                except httpx.HTTPError:
                    status, payload = 0, {}
                self.sent.append(
                    Sent(
                        started,
                        learner,
                        status,
                        payload.get("model_versions", {}),
                        payload.get("degraded", []),
                    )
                )
                i += 1

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def since(self, t: float) -> list[Sent]:
        return [s for s in list(self.sent) if s.started >= t]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lifecycle")
    port = free_port()
    config = write_config(
        tmp / "serve_config.yaml", port=port, store_uri=f"sqlite:///{tmp / 'tutor.db'}"
    )
    log = tmp / "serve.log"
    with serve_running(config, port=port, log_path=log, env=TEST_INGRESS_DRAIN) as url:
        yield url, config, dashboard_address(log), tmp / "tutor.db"


def _settle(seconds: float) -> float:
    time.sleep(seconds)
    return time.time()


def test_promote_canary_shadow_rollback_under_load_fail_no_request(app):
    url, config, address, db = app
    with Load(url) as load:
        start = _settle(3)
        run_tutor(config, address, "canary", "emotion", "v3", "--percent", str(CANARY_PERCENT))
        canary_from = time.time()
        health = httpx.get(f"{url}/healthz", timeout=30).json()
        assert health["rollouts"]["emotion"]["canary"] == {"version": "v3", "percent": 30.0}
        run_tutor(config, address, "shadow", "difficulty", "v1")
        shadow_from = _settle(6)
        canary_to = time.time()
        run_tutor(config, address, "promote", "emotion", "v3")
        promoted_from = time.time()
        promoted_to = _settle(4)
        run_tutor(config, address, "rollback", "emotion")
        rolled_back_from = time.time()
        rolled_back_to = _settle(4)
        run_tutor(config, address, "shadow", "difficulty", "--stop")
        _settle(2)

    failed = [s for s in load.sent if s.status != 200 or s.degraded]
    print(f"{len(load.sent)} turns from {CLIENTS} clients, {len(failed)} failed or degraded")
    assert len(load.sent) > 50
    assert failed == [], failed[:5]
    assert {s.versions["emotion"] for s in load.since(start) if s.started < canary_from} >= {
        CHAMPION
    }

    # Turns sent between two changes: the versions the last change stated, and no other.
    def window(begin: float, end: float) -> list[Sent]:
        return [s for s in load.since(begin) if s.started < end]

    during_canary = window(canary_from, canary_to)
    by_learner: dict[str, set[str]] = {}
    for sent in during_canary:
        by_learner.setdefault(sent.learner, set()).add(sent.versions["emotion"])
    assert all(len(v) == 1 for v in by_learner.values()), by_learner  # one version per learner
    for learner, (version,) in by_learner.items():
        in_canary = learner_bucket("emotion", learner) < CANARY_PERCENT
        assert version == ("v3" if in_canary else CHAMPION), learner
    assert {"v3", CHAMPION} <= {s.versions["emotion"] for s in during_canary}

    assert {s.versions["emotion"] for s in window(promoted_from, promoted_to)} == {"v3"}
    assert {s.versions["emotion"] for s in window(rolled_back_from, rolled_back_to)} == {CHAMPION}
    champion = served_version("Difficulty")
    assert {s.versions["difficulty"] for s in load.sent} == {champion}  # the shadow never answers

    store = SQLiteStore(db)
    shadows = list(store.iter_shadow_outputs("difficulty", since=shadow_from - 6))
    assert shadows and {s.version for s in shadows} == {"v1"}
    assert {s.served_version for s in shadows} == {champion}
    actions = [(e.model, e.action) for e in store.rollout_events()]
    assert actions == [
        ("emotion", "canary"),
        ("difficulty", "shadow"),
        ("emotion", "promote"),
        ("emotion", "rollback"),
        ("difficulty", "end_shadow"),
    ]
    assert config.read_text().count("shadow:") == 0 and "canary:" not in config.read_text()
