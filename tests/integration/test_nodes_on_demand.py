"""Nodes on demand: deploying the app launches a GPU worker, deleting it removes the worker.

A cluster from Ray's fake multi-node provider (tests/support/fake_cluster.py): a CPU head and
a worker type that advertises one (logical) GPU, ``min_workers: 0``. With ``accelerator: gpu``
the neural replicas (Emotion, Difficulty) ask for GPUs the cluster does not have yet; Ray's
autoscaler launches a GPU worker for them, they run there and answer, and once the app is
deleted the idle worker is removed. Nothing runs on a real GPU: what is checked is the
autoscaler's decisions and Ray's placement on the node it launched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import ray
from ray import serve
from ray.util.state import list_actors

from deployments.app import build_app, build_emotion_app
from deployments.config import EMOTION_APP, EMOTION_ROUTE, TUTOR_APP
from tests.support.fake_cluster import FakeCluster, cluster_processes, fake_autoscaling_cluster
from tests.support.serve_process import free_port

pytestmark = pytest.mark.integration
SMALL = {"num_cpus": 0.1}
GPU_PROFILE = {"num_cpus": 0.1, "num_gpus": 0.25}
GPU_WORKER = {"gpu_worker": {"resources": {"CPU": 2, "GPU": 1}, "min_workers": 0, "max_workers": 1}}


@pytest.fixture
def autoscaling_cluster(tmp_path):
    with fake_autoscaling_cluster(
        GPU_WORKER,
        head_resources={"CPU": 2, "GPU": 0},
        idle_timeout_minutes=0.1,  # 6 s
        keep_logs_in=tmp_path / "ray-logs",
    ) as cluster:
        ray.init(address=cluster.address)
        try:
            yield cluster
        finally:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
    assert not cluster_processes(cluster), "processes of the fake cluster are still running"


def _wait_for(what: str, check: Callable[[], Any], timeout_s: float, cluster: FakeCluster):
    """``check()``'s first truthy value, polled until the deadline."""
    deadline = time.monotonic() + timeout_s
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the state API may not answer yet
            last_error = exc
        time.sleep(1.0)
    raise AssertionError(
        f"not within {timeout_s}s: {what} (last error: {last_error!r})\n{cluster.monitor_log()}"
    )


def _gpu_nodes() -> list[str]:
    return [
        node["NodeID"]
        for node in ray.nodes()
        if node["Alive"] and node["Resources"].get("GPU", 0) > 0
    ]


def _app_of(deployment: str) -> str:
    return EMOTION_APP if deployment == "Emotion" else TUTOR_APP


def _replica_nodes(cluster: FakeCluster, deployment: str) -> set[str]:
    # The dashboard's address, explicitly: without it the state API looks for "the" local Ray,
    # and finds every other one on this machine too.
    actors = list_actors(
        address=cluster.dashboard_url,
        filters=[
            ("class_name", "=", f"ServeReplica:{_app_of(deployment)}:{deployment}"),
            ("state", "=", "ALIVE"),
        ],
    )
    return {actor.node_id for actor in actors}


def _apps_status() -> set[str | None]:
    apps = serve.status().applications
    return {apps[name].status if name in apps else None for name in (TUTOR_APP, EMOTION_APP)}


@pytest.mark.timeout(420)  # the waits below add up to 390 s; a pass takes ~50 s
def test_a_gpu_worker_is_launched_for_the_neural_replicas_and_removed_when_idle(
    autoscaling_cluster, tmp_path
):
    cluster = autoscaling_cluster
    assert _gpu_nodes() == [] and ray.cluster_resources().get("GPU", 0) == 0
    head = ray.get_runtime_context().get_node_id()

    port = free_port()
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    placement = {
        name: {"ray_actor_options": SMALL} for name in ("Ingress", "Personalization", "LLMRouter")
    }
    for name in ("Emotion", "Difficulty"):
        placement[name] = {"ray_actor_options": SMALL, "gpu_ray_actor_options": GPU_PROFILE}
    args = {
        "store_uri": f"sqlite:///{tmp_path}/tutor.db",
        "accelerator": "gpu",  # GPUs though the cluster has none yet: that is the demand
        "placement": placement,
    }
    started = time.monotonic()
    serve.run_many(
        [
            serve.RunTarget(target=build_app(args), name=TUTOR_APP, route_prefix="/"),
            serve.RunTarget(
                target=build_emotion_app(args), name=EMOTION_APP, route_prefix=EMOTION_ROUTE
            ),
        ],
        wait_for_applications_running=False,
    )

    # The neural replicas' demand for GPUs launches one worker of the GPU type.
    nodes = _wait_for("a GPU worker is launched", _gpu_nodes, 120, cluster)
    assert len(nodes) == 1, nodes
    (gpu_node,) = nodes
    launched_s = time.monotonic() - started
    assert gpu_node != head

    def neural_replicas_on_gpu_node():
        return all(
            _replica_nodes(cluster, name) == {gpu_node} for name in ("Emotion", "Difficulty")
        )

    _wait_for(
        "Emotion and Difficulty run on the GPU worker", neural_replicas_on_gpu_node, 120, cluster
    )
    _wait_for("the apps are RUNNING", lambda: _apps_status() == {"RUNNING"}, 60, cluster)
    for name in ("Ingress", "Personalization", "LLMRouter"):
        assert _replica_nodes(cluster, name) == {head}, name  # CPU-only work stays off the GPU node
    assert ray.available_resources().get("GPU", 0) == pytest.approx(0.5)

    # The request path reaches Emotion on the launched node (through the head's proxy, to the
    # emotion application's ingress there).
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/emotion",
        json={"texts": ["I'm stuck on fractions"]},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 1

    # Without the app the worker is idle, and the autoscaler removes it.
    serve.delete(TUTOR_APP)
    serve.delete(EMOTION_APP)
    deleted = time.monotonic()
    _wait_for("the idle GPU worker is removed", lambda: not _gpu_nodes(), 90, cluster)
    assert ray.cluster_resources().get("GPU", 0) == 0
    print(
        f"\nGPU worker launched {launched_s:.0f}s after deploy; "
        f"removed {time.monotonic() - deleted:.0f}s after delete"
    )
