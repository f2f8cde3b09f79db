"""The KubeRay manifest: in step with serve_config.yaml, read by Serve's schema and by Ray's own
KubeRay autoscaler code as a cluster would read it, sized from the placement profiles, and with
no secret in it. No cluster: Ray is imported only for its parsers."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.autoscaler._private.kuberay.autoscaling_config import (
    _derive_autoscaling_config_from_ray_cr,
)
from ray.serve.schema import ServeDeploySchema
from typer.testing import CliRunner

from deployments.cli import kuberay
from deployments.cli.errors import RefusedError
from deployments.cli.main import app
from deployments.config import AppArgs, config_deployments, config_placement
from tests.unit.cli.conftest import REAL_CONFIG, REPO_ROOT

MANIFEST = REPO_ROOT / kuberay.DEFAULT_OUT
PROVIDER_KEYS = ("GROQ_API_KEY", "GEMINI_API_KEY")


@pytest.fixture(scope="module")
def serve_config() -> dict[str, Any]:
    return yaml.safe_load(REAL_CONFIG.read_text())


@pytest.fixture(scope="module")
def manifest(serve_config) -> dict[str, Any]:
    return kuberay.render_rayservice(serve_config)


def _cluster(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["rayClusterConfig"]


def _groups(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    cluster = _cluster(manifest)
    return {"head": cluster["headGroupSpec"]} | {
        g["groupName"]: g for g in cluster["workerGroupSpecs"]
    }


def _containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [g["template"]["spec"]["containers"][0] for g in _groups(manifest).values()]


def _cpus(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _app(serve_config: dict[str, Any]) -> dict[str, Any]:
    """The tutor's application (the first)."""
    return serve_config["applications"][0]


def _sum_at_max(serve_config: dict[str, Any], names: list[str], key: str) -> float:
    """Σ over deployments of a GPU profile's `key` x max_replicas, read straight from the file
    (each deployment from the application that holds it: Emotion from the emotion one)."""
    entries = config_deployments(serve_config)
    placement = config_placement(serve_config)
    total = 0.0
    for name in names:
        profile = placement[name]["gpu_ray_actor_options"]
        autoscaling = entries.get(name, {}).get("autoscaling_config", {})
        total += profile[key] * autoscaling.get("max_replicas", 1)
    return total


def test_the_committed_manifest_is_what_serve_config_generates():
    committed = MANIFEST.read_text()
    groups = _groups(yaml.safe_load(committed))
    expected = kuberay.manifest_text(
        REAL_CONFIG,
        # The images it was generated for (`make kuberay KUBERAY_IMAGE=...`) are not drift.
        image=groups["head"]["template"]["spec"]["containers"][0]["image"],
        gpu_image=groups["gpu-workers"]["template"]["spec"]["containers"][0]["image"],
        name=yaml.safe_load(committed)["metadata"]["name"],
    )
    assert committed == expected, (
        "deploy/kuberay/rayservice.yaml is not what serve_config.yaml generates: run `make kuberay`"
    )
    assert committed.startswith(kuberay.HEADER)


def test_serve_config_v2_is_a_string_that_serve_accepts(manifest, serve_config):
    text = manifest["spec"]["serveConfigV2"]
    assert isinstance(text, str)  # KubeRay requires a string, not a mapping
    schema = ServeDeploySchema.model_validate(yaml.safe_load(text))
    assert schema.proxy_location.value == "EveryNode"
    assert schema.http_options.host == "0.0.0.0"
    assert schema.http_options.port == serve_config["http_options"]["port"]
    assert (
        schema.http_options.request_timeout_s == serve_config["http_options"]["request_timeout_s"]
    )


def test_the_applications_are_the_files_asking_for_gpus_without_a_store(serve_config):
    with_store = copy.deepcopy(serve_config)
    for application in with_store["applications"]:
        application["args"]["store_uri"] = "sqlite:///var/tutor.db"
    rendered = kuberay.render_rayservice(with_store)
    served_apps = yaml.safe_load(rendered["spec"]["serveConfigV2"])["applications"]
    assert len(served_apps) == len(serve_config["applications"]) == 2  # tutor, emotion
    for served, original in zip(served_apps, serve_config["applications"], strict=True):
        assert served["deployments"] == original["deployments"]  # autoscaling, user_config
        assert served["args"] == {**original["args"], "accelerator": "gpu"}  # placement kept
        assert "store_uri" not in served["args"]
        assert {k: served[k] for k in ("name", "route_prefix", "import_path")} == {
            k: original[k] for k in ("name", "route_prefix", "import_path")
        }


def test_the_cluster_has_what_kuberay_requires(manifest):
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    assert manifest["metadata"]["name"] == kuberay.DEFAULT_NAME
    cluster = _cluster(manifest)
    assert cluster["rayVersion"] == "2.60.0"
    assert cluster["enableInTreeAutoscaling"] is True
    assert isinstance(cluster["autoscalerOptions"]["idleTimeoutSeconds"], int)
    assert cluster["authOptions"] == {"mode": "token"}
    head = cluster["headGroupSpec"]
    assert head["template"]["spec"]["containers"][0]["image"] == kuberay.DEFAULT_IMAGE
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert "num-cpus" in head["rayStartParams"]
    for group in cluster["workerGroupSpecs"]:
        assert {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"} <= set(
            group
        )
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for group in _groups(manifest).values():
        # KubeRay passes these to `ray start` as strings; a number fails its validation.
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
    groups = _groups(manifest)
    assert groups["cpu-workers"]["minReplicas"] == 1
    gpu = groups["gpu-workers"]
    assert gpu["minReplicas"] == 0
    assert gpu["rayStartParams"]["num-gpus"] == "1"
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_rays_kuberay_autoscaler_reads_the_groups_as_intended(manifest):
    """The in-tree autoscaler's own translation of the RayCluster, validated by Ray's schema."""
    ray_cr = {"metadata": {"name": "tutor", "namespace": "default"}, "spec": _cluster(manifest)}
    nodes = _derive_autoscaling_config_from_ray_cr(ray_cr)["available_node_types"]
    assert set(nodes) == {"headgroup", "cpu-workers", "gpu-workers"}
    assert nodes["gpu-workers"]["resources"]["GPU"] == 1
    assert nodes["gpu-workers"]["min_workers"] == 0
    assert "GPU" not in nodes["cpu-workers"]["resources"]
    assert "GPU" not in nodes["headgroup"]["resources"]
    # What Ray sees matches what Kubernetes reserves: each container has at least its Ray CPUs.
    for name, group in _groups(manifest).items():
        container = group["template"]["spec"]["containers"][0]
        ray_cpus = nodes["headgroup" if name == "head" else name]["resources"]["CPU"]
        assert _cpus(container["resources"]["requests"]["cpu"]) >= ray_cpus
        assert container["resources"]["requests"] == container["resources"]["limits"]


@pytest.mark.parametrize("local_llm", [False, True])
def test_gpu_workers_fit_the_gpu_profiles_at_max_replicas(serve_config, local_llm):
    config = copy.deepcopy(serve_config)
    neural = ["Emotion", "Difficulty"]
    if local_llm:
        _app(config)["args"]["local_llm_path"] = "/models/tiny-lm"
        neural.append("LocalLM")
    gpu = _groups(kuberay.render_rayservice(config))["gpu-workers"]
    num_cpus = int(gpu["rayStartParams"]["num-cpus"])
    assert num_cpus >= _sum_at_max(config, neural, "num_cpus")
    assert num_cpus < _sum_at_max(config, neural, "num_cpus") + 1  # rounded up, no more
    share = _sum_at_max(config, neural, "num_gpus")
    assert gpu["maxReplicas"] >= math.ceil(share)


def test_cpu_workers_fit_the_cpu_only_deployments_at_max_replicas(serve_config, manifest):
    app = _app(serve_config)
    args = AppArgs.model_validate({**app["args"], "accelerator": "gpu"})
    cpu_only = [
        d
        for d in app["deployments"]
        if not args.actor_options(d["name"], use_gpu=True).get("num_gpus")
    ]
    assert {d["name"] for d in cpu_only} == {"Ingress", "Personalization", "LLMRouter"}
    need = sum(
        args.actor_options(d["name"], use_gpu=True)["num_cpus"]
        * d["autoscaling_config"]["max_replicas"]
        for d in cpu_only
    )
    groups = _groups(manifest)
    assert int(groups["cpu-workers"]["rayStartParams"]["num-cpus"]) >= need
    ingress = next(d for d in cpu_only if d["name"] == "Ingress")
    ingress_need = (
        args.actor_options("Ingress", use_gpu=True)["num_cpus"]
        * ingress["autoscaling_config"]["max_replicas"]
    )
    assert int(groups["head"]["rayStartParams"]["num-cpus"]) >= ingress_need


def test_secrets_come_from_the_secret_never_from_the_manifest(manifest):
    for container in _containers(manifest):
        env = {e["name"]: e for e in container["env"]}
        store = env["TUTOR_STORE_URI"]
        assert "value" not in store
        assert store["valueFrom"]["secretKeyRef"] == {"name": "tutor-secrets", "key": "store-uri"}
        for key in PROVIDER_KEYS:
            assert "value" not in env[key]
            ref = env[key]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["optional"]) == ("tutor-secrets", True)
        assert env["HF_HUB_OFFLINE"]["value"] == env["TRANSFORMERS_OFFLINE"]["value"] == "1"
    text = MANIFEST.read_text()
    for leak in ("mongodb://", "sqlite:", "store_uri"):
        assert leak not in text


def test_provider_keys_are_the_ones_the_router_names(serve_config):
    assert kuberay.provider_key_envs(_app(serve_config)) == list(PROVIDER_KEYS)


def test_a_deployment_without_a_maximum_is_refused(serve_config):
    config = copy.deepcopy(serve_config)
    emotion = config_deployments(config)["Emotion"]
    del emotion["autoscaling_config"]
    emotion["num_replicas"] = "auto"
    with pytest.raises(RefusedError, match="max_replicas"):
        kuberay.render_rayservice(config)


def test_the_command_writes_checks_and_reports_drift(tmp_path: Path, config_path: Path):
    runner = CliRunner()
    out = tmp_path / "deploy" / "rayservice.yaml"
    args = ["kuberay", "--config", str(config_path), "--out", str(out)]
    assert runner.invoke(app, [*args, "--check"]).exit_code == 1  # nothing there yet
    written = runner.invoke(app, args)
    assert written.exit_code == 0, written.output
    assert out.read_text() == kuberay.manifest_text(config_path)
    assert runner.invoke(app, [*args, "--check"]).exit_code == 0

    config_path.write_text(config_path.read_text().replace("max_replicas: 2", "max_replicas: 3"))
    before = out.read_bytes()
    stale = runner.invoke(app, [*args, "--check"])
    assert stale.exit_code == 1
    assert "make kuberay" in stale.stderr
    assert out.read_bytes() == before  # --check writes nothing

    config_path.write_text(
        "applications: [{name: tutor, args: {placement: {Sentiment: {}}}}, {name: emotion}]\n"
    )
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2
    assert "unknown deployments in placement: ['Sentiment']" in refused.stderr

    config_path.write_text("applications: [{name: tutor, args: {}}]\n")
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2
    assert "must hold the tutor and emotion applications" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
