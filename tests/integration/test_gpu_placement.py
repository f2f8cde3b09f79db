"""On a cluster with GPUs, the same app args put the neural deployments on the GPU node.

Ray's test Cluster runs two raylets on this machine: a CPU head and a node that advertises one
(fake) GPU. Nothing runs on a real GPU here; what is checked is Ray's placement decision, and
that the router reaches the LocalLM deployment placed there.
"""

from __future__ import annotations

import pytest
import ray
import yaml
from ray import serve
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from deployments.app import build_app, build_emotion_app
from deployments.config import EMOTION_APP, EMOTION_ROUTE, PROVIDERS_FILE_ENV, TUTOR_APP
from models.llm.prompts import ReplyContext
from tests.support.serve_process import free_port

pytestmark = pytest.mark.integration
SMALL = {"num_cpus": 0.1}


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory):
    # The router's only provider is the local model. Replicas inherit the environment of the
    # raylets, which inherit this process's.
    providers = tmp_path_factory.mktemp("providers") / "providers.yaml"
    local = {"name": "local", "kind": "local", "model": "tiny", "max_tokens": 8, "timeout_s": 60}
    providers.write_text(yaml.safe_dump({"providers": [local]}))
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PROVIDERS_FILE_ENV, str(providers))
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


def _app_of(deployment: str) -> str:
    return EMOTION_APP if deployment == "Emotion" else TUTOR_APP


def _replica_nodes(deployment: str) -> set[str]:
    actors = list_actors(
        filters=[("class_name", "=", f"ServeReplica:{_app_of(deployment)}:{deployment}")]
        + [("state", "=", "ALIVE")]
    )
    return {actor.node_id for actor in actors}


def test_neural_deployments_are_placed_on_the_gpu_node(gpu_cluster, tiny_lm, tmp_path):
    placement = {
        name: {"ray_actor_options": SMALL} for name in ("Ingress", "Personalization", "LLMRouter")
    }
    for name in ("Emotion", "Difficulty", "LocalLM"):
        placement[name] = {
            "ray_actor_options": SMALL,
            "gpu_ray_actor_options": {"num_cpus": 0.1, "num_gpus": 0.25},
        }
    args = {
        "store_uri": f"sqlite:///{tmp_path}/tutor.db",
        "accelerator": "auto",
        "placement": placement,
        "local_llm_path": str(tiny_lm),
    }
    serve.run(build_emotion_app(args), name=EMOTION_APP, route_prefix=EMOTION_ROUTE)
    serve.run(build_app(args), name=TUTOR_APP, route_prefix="/")
    for neural in ("Emotion", "Difficulty", "LocalLM"):
        assert _replica_nodes(neural) == {gpu_cluster}, neural
    assert ray.available_resources().get("GPU", 0) == pytest.approx(0.25)

    # The router streams the reply from the LocalLM replica on the GPU node.
    router = serve.get_deployment_handle("LLMRouter", app_name="tutor")
    context = ReplyContext(message="why is 1/2 > 1/3?", strategy="hint", emotion_state="neutral")
    text, llm, error = router.respond.remote(context).result(timeout_s=120)
    assert text and error is None
    assert (llm.provider, llm.model, [a.outcome for a in llm.attempts]) == ("local", "tiny", ["ok"])
