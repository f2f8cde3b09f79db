"""Which version of a model serves a call: the champion, a canary for a stable share of
learners, and a shadow that scores alongside and is never returned.

The plan is part of each model deployment's ``user_config`` (``serve_config.yaml`` stays the
single source of truth); ``tutor models ...`` edits it and Serve hands it to ``reconfigure``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MODELS = ("emotion", "difficulty", "personalization")
Role = Literal["champion", "canary", "shadow", "requested"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class CanarySplit(_Strict):
    version: str = Field(description="The candidate a share of learners gets.")
    percent: float = Field(gt=0, lt=100, description="Share of learners, by a hash of learner_id.")
    started_at: datetime = Field(
        description="Online metrics compare versions from here on. Required (`tutor` writes "
        "it): every replica must agree on it, and it names this canary run in the history."
    )


class ShadowRun(_Strict):
    version: str = Field(description="Scores live turns beside the served version; never returned.")
    started_at: datetime = Field(default_factory=utc_now)


class GuardrailConfig(_Strict):
    """When a canary is rolled back without anyone asking (deployments.lifecycle.guardrail)."""

    enabled: bool = True
    max_error_rate_increase: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Canary error rate above the champion's, absolute; it must also be higher "
        "with one-sided significance `alpha` (a few errors in a small sample are not enough).",
    )
    max_p99_ratio: float = Field(
        default=2.0, ge=1, description="Canary p99 latency over the champion's."
    )
    min_p99_increase_ms: float = Field(
        default=50.0,
        ge=0,
        description="And at least this much slower: the latency buckets are coarse (20, 25, "
        "30, 40, 50 ms) and one slow first call moves a small sample's p99.",
    )
    min_requests: int = Field(
        default=200, ge=1, description="Requests each version needs before its errors count."
    )
    min_latency_requests: int = Field(
        default=500,
        ge=1,
        description="Requests each version needs before its p99 counts (5 in the tail).",
    )
    min_labels: int = Field(
        default=200, ge=10, description="Labels each version needs before outcomes count."
    )
    alpha: float = Field(
        default=0.01, gt=0, lt=0.5, description="One-sided significance of 'worse outcomes'."
    )
    interval_s: float = Field(default=15.0, gt=0, description="How often a replica checks.")


class RolloutConfig(_Strict):
    """The rollout fields of a model deployment's user_config."""

    model_version: str = Field(default="latest", description="The champion: serves everyone else.")
    canary: CanarySplit | None = None
    shadow: ShadowRun | None = None
    guardrail: GuardrailConfig = Field(default_factory=GuardrailConfig)

    @model_validator(mode="after")
    def _distinct_versions(self) -> RolloutConfig:
        if self.canary and self.canary.version == self.model_version:
            raise ValueError(f"canary {self.canary.version} is already the champion")
        if self.shadow and self.shadow.version == self.model_version:
            raise ValueError(f"shadow {self.shadow.version} is already the champion")
        return self


def learner_bucket(model: str, learner_id: str) -> float:
    """A learner's place in [0, 100) for ``model``: stable across turns, replicas and restarts,
    and independent between models. A canary of P% takes the buckets below P, so raising P keeps
    every learner already on the candidate there."""
    digest = hashlib.sha256(f"{model}:{learner_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


@dataclass(frozen=True)
class Route:
    version: str
    role: Role


@dataclass(frozen=True)
class ResolvedRollout:
    """A RolloutConfig with registry versions resolved ("latest" -> "v4") and a canary that
    the guardrail stopped left out."""

    model: str
    champion: str
    canary: str | None = None
    percent: float = 0.0
    shadow: str | None = None
    canary_started_at: float | None = None
    shadow_started_at: float | None = None

    @classmethod
    def resolve(
        cls, model: str, config: RolloutConfig, resolve_version: Callable[[str], str]
    ) -> ResolvedRollout:
        canary, shadow = config.canary, config.shadow
        return cls(
            model=model,
            champion=resolve_version(config.model_version),
            canary=resolve_version(canary.version) if canary else None,
            percent=canary.percent if canary else 0.0,
            shadow=resolve_version(shadow.version) if shadow else None,
            canary_started_at=canary.started_at.timestamp() if canary else None,
            shadow_started_at=shadow.started_at.timestamp() if shadow else None,
        )

    def without_canary(self) -> ResolvedRollout:
        return ResolvedRollout(
            model=self.model,
            champion=self.champion,
            shadow=self.shadow,
            shadow_started_at=self.shadow_started_at,
        )

    @property
    def loaded(self) -> list[str]:
        """Every version the replicas keep in memory for this plan, champion first."""
        return list(dict.fromkeys(v for v in (self.champion, self.canary, self.shadow) if v))

    def route(self, learner_id: str | None = None, requested: str | None = None) -> Route:
        """The version for one call. A call that names a version gets it (it must be loaded);
        a call without a learner gets the champion; a learner in the canary's buckets gets the
        canary."""
        if requested is not None:
            if requested not in self.loaded:
                raise UnknownVersionError(
                    f"{self.model} {requested} is not loaded; loaded: {', '.join(self.loaded)}"
                )
            return Route(requested, "requested")
        # The canary first: the bucket (a SHA-256) only while one runs, and most calls have none.
        in_canary = (
            bool(self.canary)
            and learner_id is not None
            and learner_bucket(self.model, learner_id) < self.percent
        )
        if in_canary:
            return Route(self.canary, "canary")
        return Route(self.champion, "champion")

    def role_of(self, version: str) -> str:
        if version == self.champion:
            return "champion"
        if version == self.canary:
            return "canary"
        if version == self.shadow:
            return "shadow"
        return "retired"

    def describe(self) -> dict:
        """What /healthz shows for this model."""
        return {
            "champion": self.champion,
            "canary": {"version": self.canary, "percent": self.percent} if self.canary else None,
            "shadow": self.shadow,
            "loaded": self.loaded,
        }


class UnknownVersionError(LookupError):
    """A call named a version that this deployment has not loaded."""


def guardrail_event_id(model: str, canary_version: str, started_at: float) -> str:
    """The one promotion-history event of a guardrail rollback of one canary run: every replica
    that reaches the verdict writes the same id, so the history holds it once, and every replica
    (and the `tutor` command) recognises that this canary run is over."""
    return f"guardrail:{model}:{canary_version}:{started_at:.0f}"
