"""The short version of `make bench-scale`, on the real application (`serve run`, HAProxy):
requests past the ingress's places are shed with 503 + Retry-After in the error shape, a
request past its time limit gets 408, and the Ingress scales up under held load and back down.

Work is held open by an LLM provider that waits before answering (the loopback stub), so what
is asserted is ordering and replica counts, never how fast: shed answers come back while the
admitted requests are still held; replicas are awaited with deadlines.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from benchmarks.replica_watch import ServeWatch
from tests.support.llm_stub import RunningStub
from tests.support.serve_process import (
    DEFAULT_CONFIG,
    TEST_INGRESS_DRAIN,
    dashboard_address,
    free_port,
    serve_running,
)

pytestmark = pytest.mark.integration

HELD_S = 20  # the provider's wait before its first token: longer than the time limit
TIME_LIMIT_S = 6
IN_FLIGHT, WAITING = 2, 2  # per Ingress replica
FAST_AUTOSCALING = {
    "min_replicas": 1,
    "initial_replicas": 1,
    "max_replicas": 2,
    "target_ongoing_requests": 1,
    "upscale_delay_s": 1,
    "downscale_delay_s": 3,
    "metrics_interval_s": 0.5,
    "look_back_period_s": 2,
}


def _config(tmp: Path, port: int, provider_url: str) -> Path:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["http_options"]["port"] = port
    app = config["applications"][0]
    app["args"]["store_uri"] = f"sqlite:///{tmp / 'tutor.db'}"
    for deployment in app["deployments"]:
        if deployment["name"] == "Ingress":
            deployment["autoscaling_config"] = FAST_AUTOSCALING
            deployment["user_config"].update(
                max_turns_in_flight=IN_FLIGHT,
                max_waiting=WAITING,
                max_wait_s=60,
                request_timeout_s=TIME_LIMIT_S,
            )
        if deployment["name"] == "LLMRouter":
            deployment["user_config"]["providers"] = [
                {
                    "name": "slow",
                    "base_url": provider_url,
                    "model": "stub",
                    "api_key_env": "TUTOR_TEST_PROVIDER_KEY",
                    "timeout_s": 60,
                }
            ]
    path = tmp / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scaling")
    stub = RunningStub()
    stub.stub.record = False
    stub.stub.behave("slow", delay_s=HELD_S)
    port = free_port()
    config = _config(tmp, port, stub.stub.url("slow"))
    log = tmp / "serve.log"
    env = {"TUTOR_TEST_PROVIDER_KEY": "sk-test", **TEST_INGRESS_DRAIN}
    try:
        with serve_running(config, port=port, log_path=log, env=env) as url:
            yield url, dashboard_address(log)
    finally:
        stub.stop()


def _turn(base_url: str, learner: str) -> tuple[float, httpx.Response]:
    response = httpx.post(
        f"{base_url}/v1/tutor",
        json={"learner_id": learner, "message": "why is 1/2 more than 1/3?"},
        timeout=120,
    )
    return time.monotonic(), response


def test_past_its_places_the_ingress_sheds_at_once_and_a_held_request_times_out(app):
    base_url, _ = app
    burst = 12  # one replica: 2 at work, 2 waiting, 8 shed
    with ThreadPoolExecutor(burst) as pool:
        answers = list(pool.map(lambda i: _turn(base_url, f"burst-{i}"), range(burst)))

    shed = [(t, r) for t, r in answers if r.status_code == 503]
    held = [(t, r) for t, r in answers if r.status_code != 503]
    assert len(shed) >= burst - 2 * (IN_FLIGHT + WAITING), answers[0][1].text
    for _, response in shed:
        assert response.json()["error"]["code"] == "overloaded", response.text
        assert response.headers["retry-after"] == "1"
    # Shed answers came back while the admitted requests were still held by the provider.
    assert max(t for t, _ in shed) < min(t for t, _ in held)
    for _, response in held:
        assert response.status_code == 408, response.text
        error = response.json()["error"]
        assert error["code"] == "timeout" and f"{TIME_LIMIT_S}s" in error["message"]


def wait_for_replicas(watch: ServeWatch, deployment: str, replicas: int, timeout_s: float):
    waited = watch.wait_for(lambda w: w.running(deployment) == replicas, timeout_s)
    assert waited is not None, f"{deployment}: {watch.latest} after {timeout_s}s, not {replicas}"


def test_the_ingress_scales_up_under_held_load_and_back_down_after(app):
    base_url, dashboard = app
    watch = ServeWatch(dashboard)
    stop = threading.Event()

    def held_client(index: int) -> None:
        while not stop.is_set():
            _turn(base_url, f"held-{index}")

    clients = [threading.Thread(target=held_client, args=(i,), daemon=True) for i in range(4)]
    try:
        wait_for_replicas(watch, "Ingress", 1, timeout_s=60)
        for client in clients:
            client.start()
        wait_for_replicas(watch, "Ingress", 2, timeout_s=90)
        stop.set()
        for client in clients:
            client.join(timeout=TIME_LIMIT_S + 30)
        wait_for_replicas(watch, "Ingress", 1, timeout_s=90)
    finally:
        stop.set()
        watch.stop()
