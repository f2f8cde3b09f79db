"""Builds the request graph: ``serve_config.yaml`` points here (``deployments.app:build_app``)."""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray import serve
from ray.serve import Application

from deployments.config import EMOTION_APP, TUTOR_APP, AppArgs, TutorSettings, absolute_store_uri
from deployments.difficulty import DifficultyDeployment
from deployments.emotion_ingress import EmotionIngress
from deployments.ingress import Ingress
from deployments.llm_router import LLMRouterDeployment
from deployments.local_llm import LocalLMDeployment
from deployments.personalization import PersonalizationDeployment
from deployments.security.policy import auth_enabled

logger = logging.getLogger("ray.serve")


def cluster_has_gpus() -> bool:
    """Whether the cluster the app is built on has any GPU (``accelerator: auto``)."""
    if not ray.is_initialized():
        return False  # built outside a cluster (a unit test, a config check): plan for CPUs
    try:
        return ray.cluster_resources().get("GPU", 0) > 0
    except Exception:
        logger.warning("could not read the cluster's resources: planning for CPUs", exc_info=True)
        return False


def _use_gpu(args: AppArgs) -> bool:
    if args.accelerator == "auto":
        return cluster_has_gpus()
    return args.accelerator == "gpu"


def proxy_host() -> str | None:
    """The address the Serve proxy binds (``http_options.host``), from the running Serve
    controller; None when it cannot be known (no cluster or no Serve yet: treated as not
    loopback). build_app runs in a task of the cluster the config is deployed to, where the
    controller is already up with its http_options. Serve has no public call for them, hence
    its client's ``http_config``."""
    if not ray.is_initialized():
        return None
    try:
        from ray.serve.context import _get_global_client

        client = _get_global_client(raise_if_no_controller_running=False)
        return None if client is None else client.http_config.host
    except Exception:
        logger.warning("could not read Serve's http_options: auth stays on", exc_info=True)
        return None


def _deployment(cls: type, name: str, args: AppArgs, use_gpu: bool) -> serve.Deployment:
    options: dict[str, Any] = {"ray_actor_options": args.actor_options(name, use_gpu=use_gpu)}
    if hasattr(cls, "reconfigure"):
        # user_config={} makes Serve call reconfigure() with the defaults when the config file
        # gives no user_config; a user_config in the file replaces it. (Serve refuses to start
        # a deployment given a user_config that it has no reconfigure() for.)
        options["user_config"] = {}
    return serve.deployment(cls, name=name).options(**options)


class _Built:
    """What both applications take from their args and the environment."""

    def __init__(self, raw_args: dict[str, Any] | None, app: str) -> None:
        self.args = AppArgs.model_validate(raw_args or {})
        settings = TutorSettings()
        self.settings = settings
        self.store_uri = absolute_store_uri(self.args.resolved_store_uri(settings))
        self.use_gpu = _use_gpu(self.args)
        host = proxy_host()
        self.auth = auth_enabled(settings.auth, host)  # refuses TUTOR_AUTH=off off loopback
        self.registry = str(self.args.registry_dir)
        logger.info(
            "building %s app: store=%s gpu=%s auth=%s (TUTOR_AUTH=%s, proxy host %s)",
            app,
            self.store_uri.split("@")[-1],
            self.use_gpu,
            "on" if self.auth else "off",
            settings.auth,
            host,
        )

    def deployment(self, cls: type, name: str) -> serve.Deployment:
        return _deployment(cls, name, self.args, self.use_gpu)


def build_emotion_app(raw_args: dict[str, Any]) -> Application:
    """The emotion application (route /v1/emotion): the Emotion deployment is its ingress, and
    the tutor's Emotion stage by a handle (deployments/emotion_ingress.py)."""
    built = _Built(raw_args, EMOTION_APP)
    # The model deployments write their lifecycle records (serving stats, shadow outputs,
    # guardrail rollbacks) to the store.
    return built.deployment(EmotionIngress, "Emotion").bind(
        registry_dir=built.registry,
        store_uri=built.store_uri,
        torch_threads=built.args.placement["Emotion"].torch_threads,
        backend=built.args.placement["Emotion"].backend,
        auth_enabled=built.auth,
    )


def build_app(raw_args: dict[str, Any]) -> Application:
    """Validate the application's args and bind the graph (options and user_config come from
    the ``deployments`` section of the config, which Serve applies on top of these). Emotion
    is the emotion application's (build_emotion_app); the Ingress reaches it by name."""
    built = _Built(raw_args, TUTOR_APP)
    args, registry, store_uri = built.args, built.registry, built.store_uri
    difficulty = built.deployment(DifficultyDeployment, "Difficulty").bind(
        registry_dir=registry,
        store_uri=store_uri,
        torch_threads=args.placement["Difficulty"].torch_threads,
    )
    personalization = built.deployment(PersonalizationDeployment, "Personalization").bind(
        registry_dir=registry, store_uri=store_uri
    )
    local_lm = None
    if args.local_llm_path is not None:
        local_lm = built.deployment(LocalLMDeployment, "LocalLM").bind(
            model_path=str(args.local_llm_path),
            torch_threads=args.placement["LocalLM"].torch_threads,
        )
    router = built.deployment(LLMRouterDeployment, "LLMRouter").bind(local_lm=local_lm)
    return built.deployment(Ingress, "Ingress").bind(
        difficulty,
        personalization,
        router,
        store_uri=store_uri,
        registry_dir=registry,
        auth_enabled=built.auth,
        outbox_dir=str(built.settings.resolved_outbox_dir(store_uri)),
    )
