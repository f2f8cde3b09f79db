"""serve_config.yaml and cluster.yaml are valid for the installed Ray and for our own models."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from deployments.config import (
    EMOTION_APP,
    EMOTION_ROUTE,
    TUTOR_APP,
    USER_CONFIG_MODELS,
    AppArgs,
    DifficultyUserConfig,
    Placement,
    config_deployments,
    config_placement,
)

ROOT = Path(__file__).resolve().parents[3]


def _config() -> dict:
    raw = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config = ServeDeploySchema.model_validate(raw)
    assert config.http_options.host == "127.0.0.1", "bind to loopback by default"
    return raw


def test_serve_config_args_and_user_configs_validate():
    config = _config()
    apps = {app["name"]: app for app in config["applications"]}
    assert set(apps) == {TUTOR_APP, EMOTION_APP}
    assert apps[EMOTION_APP]["route_prefix"] == EMOTION_ROUTE
    assert [d["name"] for d in apps[EMOTION_APP]["deployments"]] == ["Emotion"]
    entries = config_deployments(config)
    assert set(entries) == set(USER_CONFIG_MODELS)
    assert sum(len(app["deployments"]) for app in apps.values()) == len(entries)  # no repeats
    for deployment in entries.values():
        USER_CONFIG_MODELS[deployment["name"]].model_validate(deployment["user_config"])
        assert {"autoscaling_config", "max_ongoing_requests", "max_queued_requests"} <= set(
            deployment
        )
    emotion = entries["Emotion"]
    assert emotion["max_ongoing_requests"] >= emotion["user_config"]["max_batch_size"]
    for app in apps.values():
        AppArgs.model_validate(app["args"])
    # Every deployment's placement is in the args of the application that builds it.
    args = AppArgs.model_validate({"placement": config_placement(config)})
    assert set(apps[EMOTION_APP]["args"]["placement"]) == {"Emotion"}
    assert "Emotion" not in apps[TUTOR_APP]["args"]["placement"]
    # The neural deployments ask for GPUs only when the cluster has them.
    assert args.actor_options("Emotion", use_gpu=True)["num_gpus"] > 0
    assert "num_gpus" not in args.actor_options("Emotion", use_gpu=False)
    assert "num_gpus" not in args.actor_options("Personalization", use_gpu=True)
    assert args.actor_options("LocalLM", use_gpu=True)["num_gpus"] > 0


def test_the_ingresses_shed_before_serve_does_and_time_out_before_the_proxy():
    """Serve's own rejections and timeouts are plain text: the admission of each application's
    ingress (the one error shape) must act first, with Serve's limits as the backstop above."""
    config = _config()
    entries = config_deployments(config)
    ingress, emotion = entries["Ingress"], entries["Emotion"]
    limits = USER_CONFIG_MODELS["Ingress"].model_validate(ingress["user_config"])
    pools = limits.max_turns_in_flight + limits.max_predictions_in_flight
    assert ingress["max_ongoing_requests"] >= pools + 2 * limits.max_waiting
    assert limits.request_timeout_s < config["http_options"]["request_timeout_s"]
    assert ingress["backpressure_config"]["retry_after_s"] > 0
    # Emotion: its own /v1/emotion places and line, plus the turns the Ingress lets in.
    own = USER_CONFIG_MODELS["Emotion"].model_validate(emotion["user_config"])
    needed = own.max_in_flight + own.max_waiting + limits.max_turns_in_flight
    assert emotion["max_ongoing_requests"] >= needed
    assert own.request_timeout_s < config["http_options"]["request_timeout_s"]
    assert emotion["backpressure_config"]["retry_after_s"] > 0


def test_config_errors_name_the_bad_value():
    with pytest.raises(ValidationError, match="Emotoin"):
        AppArgs.model_validate({"placement": {"Emotoin": {}}})
    with pytest.raises(ValidationError, match="target_band"):
        DifficultyUserConfig.model_validate({"target_band": [0.9, 0.1]})
    with pytest.raises(ValidationError, match="gpu_ray_actor_options"):
        Placement.model_validate({"ray_actor_options": {"num_gpus": 1}})
    with pytest.raises(ValidationError, match="onnx is for Emotion only"):
        AppArgs.model_validate({"placement": {"Difficulty": {"backend": "onnx"}}})
    assert AppArgs.model_validate({}).placement["Emotion"].backend == "torch"


def test_cluster_yaml_is_a_valid_launcher_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    validate_config(config)
    assert {"head", "cpu_worker", "gpu_worker"} <= set(config["available_node_types"])


def test_an_http_provider_needs_a_base_url_and_a_local_one_does_not():
    router = USER_CONFIG_MODELS["LLMRouter"]
    with pytest.raises(ValidationError, match="needs a base_url"):
        router.model_validate({"providers": [{"name": "p", "model": "m"}]})
    local = router.model_validate({"providers": [{"name": "l", "kind": "local", "model": "m"}]})
    assert local.providers[0].base_url is None
    with pytest.raises(ValidationError, match="unique"):
        router.model_validate({"providers": [{"name": "l", "kind": "local", "model": "m"}] * 2})


def test_emotion_runs_onnx_only_for_fine_tuned_versions_on_cpus():
    from deployments.emotion import runtime_options
    from models.common.registry import ModelRegistry

    registry = ModelRegistry()
    v4, v1 = (registry.load("emotion", v).path for v in ("v4", "v1"))
    assert runtime_options(v4, "onnx", 1, "cpu") == {"backend": "onnx", "threads": 1}
    assert runtime_options(v1, "onnx", 1, "cpu") == {}  # a frozen-encoder version: torch
    assert runtime_options(v4, "onnx", 1, "cuda") == {}  # a GPU replica: torch
    assert runtime_options(v4, "torch", 2, "cpu") == {}


def test_an_int8_emotion_version_runs_on_onnx_runtime_on_any_device(tmp_path):
    """Its state head was fitted on its int8 encoder's features, so torch's fp32 is not it."""
    import shutil

    from deployments.emotion import runtime_options
    from models.common.registry import ModelRegistry
    from models.emotion.quantization import INT8_STATIC, write_recipe

    int8 = tmp_path / "v9"
    shutil.copytree(ModelRegistry().load("emotion", "v4").path, int8)
    write_recipe(int8, {**INT8_STATIC, "calibration_texts": ["a calibration sentence"]})
    for backend, device in (("onnx", "cpu"), ("onnx", "cuda"), ("torch", "cpu")):
        assert runtime_options(int8, backend, 1, device) == {"backend": "onnx", "threads": 1}
