"""The LLM router's settings: its providers and how hard it tries (pydantic, validated once).

They are the LLMRouter deployment's ``user_config`` (``serve deploy`` changes them in place);
``$TUTOR_PROVIDERS`` may replace the providers list (``deployments.config.router_config``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderConfig(_Strict):
    name: str
    kind: Literal["openai", "local"] = Field(
        default="openai",
        description="openai: an OpenAI-compatible HTTP endpoint; local: the LocalLM deployment "
        "(the app's `local_llm_path`).",
    )
    base_url: str | None = Field(
        default=None, description="OpenAI-compatible base URL, e.g. https://api.openai.com/v1"
    )
    model: str
    api_key_env: str | None = Field(
        default=None, description="Name of the environment variable holding the key."
    )
    timeout_s: float = Field(
        default=20.0, gt=0, description="Longest wait for a response or the next token."
    )
    max_tokens: int = Field(default=400, ge=1)
    temperature: float = Field(default=0.4, ge=0, le=2)
    tags: list[str] = Field(
        default_factory=list, description="e.g. fast, strong: what routing may prefer it for."
    )
    cost_per_1k_input: float = Field(default=0.0, ge=0, description="Price per 1k prompt tokens.")
    cost_per_1k_output: float = Field(default=0.0, ge=0, description="Price per 1k reply tokens.")
    priority: int = Field(default=100, description="Lower is tried first when otherwise equal.")
    request_usage: bool = Field(
        default=True,
        description="Ask for the token count at the end of the stream "
        "(`stream_options.include_usage`); turn off for a server that refuses the option. "
        "Without a count, tokens are estimated from characters.",
    )

    @model_validator(mode="after")
    def _endpoint_for_http(self) -> ProviderConfig:
        if self.kind == "openai" and not self.base_url:
            raise ValueError(f"provider {self.name!r}: an openai provider needs a base_url")
        return self


class RouterConfig(_Strict):
    providers: list[ProviderConfig] = Field(
        default_factory=list,
        description="Replaced by the `providers` list of the YAML file $TUTOR_PROVIDERS names.",
    )
    memory_turns: int = Field(default=4, ge=0, le=50, description="Past turns in the prompt.")
    max_attempts: int = Field(
        default=3, ge=1, le=10, description="Providers called per turn before the offline reply."
    )
    breaker_failure_threshold: int = Field(
        default=3, ge=1, description="Failures in a row that open a provider's circuit breaker."
    )
    breaker_cooldown_s: float = Field(
        default=30.0, gt=0, description="How long an open breaker waits before one probe."
    )
    retry_backoff_s: float = Field(
        default=0.2,
        ge=0,
        le=10,
        description="Wait before retrying a provider that failed transiently, jittered ±50% so "
        "replicas do not retry in step.",
    )

    @model_validator(mode="after")
    def _unique_provider_names(self) -> RouterConfig:
        names = [p.name for p in self.providers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"provider names must be unique, repeated: {duplicates}")
        return self
