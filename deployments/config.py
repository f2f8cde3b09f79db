"""Typed configuration of the Serve application.

Two kinds of settings, on purpose in two places of ``serve_config.yaml``:
- ``args`` (``AppArgs``): what the replicas *are*: store, registry, resources and placement.
  Changing them rebuilds the application (a rolling restart; resources cannot change in place).
- each deployment's ``user_config`` (the ``*UserConfig`` models): model versions and tunables.
  ``serve deploy`` hands them to ``reconfigure`` on the running replicas, with no restart.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from deployments.lifecycle.rollout import RolloutConfig
from deployments.security.gate import GateSettings
from deployments.tutoring.admission import AdmissionLimits
from models.common.registry import DEFAULT_REGISTRY_ROOT
from models.llm.config import RouterConfig

NEURAL_DEPLOYMENTS = ("Emotion", "Difficulty", "LocalLM")
# Two Serve applications: the tutor (route /, its Ingress calls the models) and emotion (route
# /v1/emotion): the Emotion deployment answers /v1/emotion itself, with no hop through the
# Ingress, and is the tutor's Emotion stage by a handle across applications.
TUTOR_APP = "tutor"
EMOTION_APP = "emotion"
EMOTION_ROUTE = "/v1/emotion"
ALL_DEPLOYMENTS = ("Ingress", "Emotion", "Difficulty", "Personalization", "LLMRouter", "LocalLM")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TutorSettings(BaseSettings):
    """Environment settings, read once when the application is built."""

    model_config = SettingsConfigDict(env_prefix="TUTOR_", extra="ignore")

    store_uri: str = Field(
        default="sqlite:///var/tutor.db", description="sqlite:///path or mongodb://host/db"
    )
    auth: Literal["auto", "required", "off"] = Field(
        default="auto",
        description="TUTOR_AUTH. auto: API keys required unless the Serve proxy binds a "
        "loopback address; required: always; off: never, and refused on a non-loopback "
        "address (deployments/security/policy.py).",
    )
    outbox_dir: Path | None = Field(
        default=None,
        description="Where the ingress journals writes the store cannot take (local disk). "
        "Default: `outbox` beside a SQLite store's file, else var/outbox.",
    )

    def resolved_outbox_dir(self, store_uri: str) -> Path:
        """Absolute (replicas run from another directory); ``store_uri`` already absolute."""
        if self.outbox_dir is not None:
            return self.outbox_dir.resolve()
        if store_uri.startswith("sqlite:///"):
            return Path(store_uri[len("sqlite:///") :]).resolve().parent / "outbox"
        return Path("var/outbox").resolve()


# ---- per-deployment user_config (changed in place by `serve deploy`) ----------------------


# The model deployments' user_config: the rollout (model_version = the champion, canary, shadow,
# guardrail; deployments/lifecycle/rollout.py) plus each model's serving tunables.


class DifficultyUserConfig(RolloutConfig):
    target_band: tuple[float, float] = Field(
        default=(0.70, 0.85), description="P(correct) band the recommended exercise aims for."
    )
    encoding_cache_size: int = Field(
        default=1024,
        ge=0,
        le=100_000,
        description="Learners kept per replica in each model's cache: encoded windows (networks) "
        "or feature counts (the feature model), extended by new answers (0: recompute).",
    )

    @field_validator("target_band")
    @classmethod
    def _ordered(cls, band: tuple[float, float]) -> tuple[float, float]:
        low, high = band
        if not 0 <= low <= high <= 1:
            raise ValueError(f"target_band must satisfy 0 <= low <= high <= 1, got {band}")
        return band


class PersonalizationUserConfig(RolloutConfig):
    """A version is a registered policy (its statistics, exploration and prior:
    models/artifacts/personalization/vN/policy.json); these are how any version is served."""

    stats_max_age_s: float = Field(
        default=2.0, ge=0, description="A replica's cached statistics are at most this old."
    )
    propensity_samples: int = Field(default=512, ge=16, le=10000)


PROVIDERS_FILE_ENV = "TUTOR_PROVIDERS"


def router_config(user_config: dict[str, Any]) -> RouterConfig:
    """The router's user_config, with its providers replaced by $TUTOR_PROVIDERS' when set.

    The file is read on every reconfigure, so `serve deploy` also picks up an edited file.
    """
    path = os.environ.get(PROVIDERS_FILE_ENV)
    if not path:
        return RouterConfig.model_validate(user_config)
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"${PROVIDERS_FILE_ENV}={path}: cannot read it: {exc}") from exc
    if not isinstance(loaded, dict) or not isinstance(loaded.get("providers"), list):
        raise ValueError(f"${PROVIDERS_FILE_ENV}={path}: needs a top-level `providers` list")
    return RouterConfig.model_validate({**user_config, "providers": loaded["providers"]})


class HttpEdgeConfig(_Strict):
    """What every application that answers HTTP itself sets per replica: its line for places at
    work (deployments/tutoring/admission.py) and its gate (deployments/security/). The tutor's
    Ingress and the emotion application's Emotion both take these in their user_config."""

    max_waiting: int = Field(
        default=64,
        ge=0,
        le=100_000,
        description="Requests waiting for a place, per pool; past this a request gets 503 "
        "with Retry-After at once.",
    )
    max_wait_s: float = Field(
        default=3.0,
        gt=0,
        description="A request still waiting for a place after this gets 503 (it never "
        "started: safe to retry).",
    )
    request_timeout_s: float = Field(
        default=90.0,
        gt=0,
        description="A model request not answered in this (wait included) gets 408. Below "
        "http_options.request_timeout_s, Serve's plain-text backstop.",
    )
    shed_retry_after_s: float = Field(
        default=1.0, ge=0, description="Retry-After on a shed request's 503."
    )
    # Security (deployments/security/): checked before a route runs or a body is parsed.
    max_body_bytes: int = Field(
        default=1 << 20,
        ge=1024,
        le=64 << 20,
        description="Request bodies past this are a 413 before they are parsed.",
    )
    key_cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="API key lookups are cached this long per replica: a revoked key stops "
        "working within it.",
    )
    rate_limit_storage_uri: str = Field(
        default="memory://",
        description="Where per-key request counts live (a `limits` storage URI). memory:// "
        "counts per replica (N replicas allow N x rpm, and the tutor's and the emotion "
        "application's replicas count apart); redis://host:6379 or mongodb://host/db shares "
        "one bound across replicas and applications.",
    )

    def gate_settings(self) -> GateSettings:
        return GateSettings(
            max_body_bytes=self.max_body_bytes,
            key_cache_ttl_s=self.key_cache_ttl_s,
            rate_limit_storage_uri=self.rate_limit_storage_uri,
        )

    def _limits(self, max_in_flight: int) -> AdmissionLimits:
        return AdmissionLimits(
            max_in_flight=max_in_flight,
            max_waiting=self.max_waiting,
            max_wait_s=self.max_wait_s,
            request_timeout_s=self.request_timeout_s,
            retry_after_s=self.shed_retry_after_s,
        )


class EmotionUserConfig(RolloutConfig, HttpEdgeConfig):
    """The Emotion deployment is the ingress of the `emotion` application (POST /v1/emotion
    straight to its replicas) and the tutor's Emotion stage (called by handle)."""

    max_batch_size: int = Field(default=32, ge=1, le=256)
    batch_wait_timeout_s: float = Field(default=0.002, ge=0, le=1)
    max_in_flight: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="/v1/emotion requests at work per replica (the tutor's calls by handle "
        "are admitted by the Ingress, not here).",
    )

    def admission_limits(self) -> AdmissionLimits:
        return self._limits(self.max_in_flight)


class IngressUserConfig(HttpEdgeConfig):
    stage_timeout_s: float = Field(default=10.0, gt=0, description="Per model stage.")
    store_timeout_s: float = Field(
        default=1.0,
        gt=0,
        le=30,
        description="A turn's store call not answered in this is given up: the learner's "
        "history is skipped, the turn journaled in the outbox (named in `degraded`).",
    )
    reply_timeout_s: float = Field(default=60.0, gt=0)
    # Load shedding (deployments/tutoring/admission.py), per Ingress replica, in two pools:
    # turns (/v1/tutor, /v1/chat/completions: every model plus a reply) and predictions
    # (/v1/difficulty: one model). Each pool has its places at work and its own line.
    max_turns_in_flight: int = Field(
        default=16, ge=1, le=10_000, description="Turns at work at once."
    )
    max_predictions_in_flight: int = Field(
        default=64, ge=1, le=10_000, description="/v1/difficulty at work."
    )

    def admission_limits(self, pool: str) -> AdmissionLimits:
        """``pool``: ``turns`` or ``predictions``."""
        in_flight = {
            "turns": self.max_turns_in_flight,
            "predictions": self.max_predictions_in_flight,
        }[pool]
        return self._limits(in_flight)


USER_CONFIG_MODELS: dict[str, type[BaseModel]] = {
    "Ingress": IngressUserConfig,
    "Emotion": EmotionUserConfig,
    "Difficulty": DifficultyUserConfig,
    "Personalization": PersonalizationUserConfig,
    "LLMRouter": RouterConfig,
}


# ---- application args (changing them rebuilds the app) ------------------------------------


class Placement(_Strict):
    """Resources of one deployment's replicas, on a CPU-only cluster and on one with GPUs."""

    ray_actor_options: dict[str, Any] = Field(default_factory=lambda: {"num_cpus": 0.25})
    gpu_ray_actor_options: dict[str, Any] | None = Field(
        default=None, description="Used instead when the app runs with GPUs (neural parts)."
    )
    torch_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Intra-op threads of the replica's model runtime (torch or ONNX Runtime).",
    )
    backend: Literal["torch", "onnx"] = Field(
        default="torch",
        description="Emotion on CPUs: the encoder's runtime. onnx: ONNX Runtime (the same "
        "weights exported at load, cached on disk); a GPU replica runs torch.",
    )

    @field_validator("ray_actor_options")
    @classmethod
    def _no_gpu_on_cpu_profile(cls, options: dict[str, Any]) -> dict[str, Any]:
        if options.get("num_gpus"):
            raise ValueError(
                "ray_actor_options is the CPU profile: put GPUs in gpu_ray_actor_options"
            )
        return options


class AppArgs(_Strict):
    store_uri: str | None = Field(
        default=None, description="Overrides TUTOR_STORE_URI; default sqlite:///var/tutor.db."
    )
    registry_dir: Path = Field(default=DEFAULT_REGISTRY_ROOT)
    accelerator: Literal["auto", "cpu", "gpu"] = Field(
        default="auto",
        description="auto: GPUs for the neural deployments when the cluster has any GPU.",
    )
    placement: dict[str, Placement] = Field(default_factory=dict)
    local_llm_path: Path | None = Field(
        default=None,
        description="Folder of a transformers causal LM served by the LocalLM deployment as "
        "the router's `local` providers; none: no LocalLM deployment.",
    )

    @field_validator("placement")
    @classmethod
    def _known_deployments(cls, placement: dict[str, Placement]) -> dict[str, Placement]:
        unknown = sorted(set(placement) - set(ALL_DEPLOYMENTS))
        if unknown:
            raise ValueError(
                f"unknown deployments in placement: {unknown}; known: {ALL_DEPLOYMENTS}"
            )
        return placement

    @field_validator("placement")
    @classmethod
    def _onnx_for_emotion_only(cls, placement: dict[str, Placement]) -> dict[str, Placement]:
        others = sorted(n for n, p in placement.items() if p.backend != "torch" and n != "Emotion")
        if others:
            raise ValueError(f"backend: onnx is for Emotion only; set on {others}")
        return placement

    @model_validator(mode="after")
    def _fill_placement(self) -> AppArgs:
        for name in ALL_DEPLOYMENTS:
            self.placement.setdefault(name, Placement())
        return self

    def resolved_store_uri(self, settings: TutorSettings) -> str:
        return self.store_uri or settings.store_uri

    def actor_options(self, deployment: str, *, use_gpu: bool) -> dict[str, Any]:
        placement = self.placement[deployment]
        if use_gpu and deployment in NEURAL_DEPLOYMENTS and placement.gpu_ray_actor_options:
            return dict(placement.gpu_ray_actor_options)
        return dict(placement.ray_actor_options)


def config_deployments(serve_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each deployment's entry in a parsed Serve config, by name, whichever application holds
    it (the tutor's or the emotion application)."""
    return {
        d["name"]: d
        for app in serve_config.get("applications") or []
        for d in app.get("deployments") or []
    }


def config_placement(serve_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each deployment's placement, from the ``args`` of the application that holds it."""
    return {
        name: placement
        for app in serve_config.get("applications") or []
        for name, placement in ((app.get("args") or {}).get("placement") or {}).items()
    }


def absolute_store_uri(uri: str) -> str:
    """Pin a relative SQLite path to the directory the app was started from.

    Replicas run with another working directory, so ``sqlite:///var/tutor.db`` must be resolved
    once, where the user typed ``make serve``.
    """
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(os.getcwd(), uri[len(prefix) :]).resolve())
    return uri
