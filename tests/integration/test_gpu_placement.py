"""On a cluster with GPUs, the same app args put the neural deployments on the GPU node.

Ray's test Cluster runs two raylets on this machine: a CPU head and a node that advertises one
(fake) GPU. Nothing runs on a real GPU here; what is checked is Ray's placement decision.
"""

from __future__ import annotations

import pytest
import ray
from ray import serve
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from benchmarks.serve_process import free_port
from deployments.app import build_app

pytestmark = pytest.mark.integration
SMALL = {"num_cpus": 0.1}


@pytest.fixture(scope="module")
def gpu_cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=1)
    cluster.wait_for_nodes()
    cluster.connect()
    # One proxy, on the head: two on one machine would contend for the same ports.
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": free_port()})
    try:
        yield gpu_node.node_id
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


def _replica_nodes(deployment: str) -> set[str]:
    actors = list_actors(
        filters=[("class_name", "=", f"ServeReplica:tutor:{deployment}"), ("state", "=", "ALIVE")]
    )
    return {actor.node_id for actor in actors}


def test_neural_deployments_are_placed_on_the_gpu_node(gpu_cluster, tmp_path):
    placement = {
        name: {"ray_actor_options": SMALL} for name in ("Ingress", "Personalization", "LLMRouter")
    }
    for name in ("Emotion", "Difficulty"):
        placement[name] = {
            "ray_actor_options": SMALL,
            "gpu_ray_actor_options": {"num_cpus": 0.1, "num_gpus": 0.25},
        }
    app = build_app(
        {
            "store_uri": f"sqlite:///{tmp_path}/tutor.db",
            "accelerator": "auto",
            "placement": placement,
        }
    )
    serve.run(app, name="tutor", route_prefix="/")
    assert _replica_nodes("Emotion") == {gpu_cluster}
    assert _replica_nodes("Difficulty") == {gpu_cluster}
    assert ray.available_resources().get("GPU", 0) == pytest.approx(0.5)
