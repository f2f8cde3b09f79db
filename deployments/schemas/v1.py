"""The tutor's own API (v1): /v1/tutor, /v1/emotion, /v1/difficulty, /v1/feedback,
/v1/learners/{id} and /healthz.

Request schemas reject what they cannot serve (``extra="forbid"``), so a misspelt field is a 422
that names it rather than a silent default.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StringConstraints,
    model_validator,
)

from deployments.schemas.risk import LearnerRisk
from models.common.vocab import LEARNING_STATES, STRATEGIES

MAX_MESSAGE_CHARS = 4000
MAX_TEXTS = 64
MAX_CANDIDATES = 100
MAX_HISTORY = 1000

Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$"),
]
LearningState = Literal[LEARNING_STATES]  # type: ignore[valid-type]
Strategy = Literal[STRATEGIES]  # type: ignore[valid-type]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Exercise(_Request):
    item_id: Identifier = Field(description="Exercise id (the dataset's problem id as a string).")
    skill_id: Identifier = Field(description="Skill id (the dataset's skill id as a string).")


class Answer(Exercise):
    # Strict: 0/1 or "true" are refused rather than guessed at.
    correct: StrictBool = Field(description="Whether the learner answered correctly.")


# ---- errors -------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. 'invalid_request'.")
    message: str = Field(description="What is wrong, for a person.")
    request_id: str | None = None
    fields: list[dict] = Field(default_factory=list, description="Per-field problems, if any.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


# ---- /v1/emotion --------------------------------------------------------------------------


ModelVersion = Annotated[str, StringConstraints(pattern=r"^v[0-9]{1,6}$")]
VERSION_DESCRIPTION = (
    "A version loaded in service (the champion, a canary or a shadow; /healthz lists them) to "
    "answer with; without it the champion answers, or, with a learner_id, the version that "
    "learner's canary split gives. A version not loaded now is a 409."
)


class EmotionRequest(_Request):
    texts: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_CHARS)]] = (
        Field(min_length=1, max_length=MAX_TEXTS, description="1..64 texts, 1..4000 characters.")
    )
    model_version: ModelVersion | None = Field(default=None, description=VERSION_DESCRIPTION)


class GoEmotionsScores(BaseModel):
    scores: dict[str, float] = Field(description="Sigmoid score per GoEmotions label (28).")
    predicted: list[str] = Field(description="Labels whose score reaches their tuned threshold.")


class EmotionResult(BaseModel):
    state: LearningState
    confidence: float = Field(ge=0, le=1)
    states: dict[str, float] = Field(description="Distribution over the eight learning states.")
    goemotions: GoEmotionsScores


class EmotionResponse(BaseModel):
    results: list[EmotionResult]
    model_version: str


# ---- /v1/difficulty -----------------------------------------------------------------------


class DifficultyRequest(_Request):
    learner_id: Identifier | None = Field(
        default=None, description="Read the learner's stored answer history (before `history`)."
    )
    history: list[Answer] = Field(default_factory=list, max_length=MAX_HISTORY)
    candidates: list[Exercise] = Field(min_length=1, max_length=MAX_CANDIDATES)
    trace: StrictBool = Field(default=False, description="Also predict every history step.")
    model_version: ModelVersion | None = Field(default=None, description=VERSION_DESCRIPTION)


class Prediction(BaseModel):
    item_id: str
    skill_id: str
    p_correct: float = Field(ge=0, le=1)
    flags: list[str] = Field(
        default_factory=list,
        description="Cold-start and unseen-id flags: cold_start, unseen_item, unseen_skill.",
    )
    basis: Literal["model", "population", "skill_prior", "global_prior"] = Field(
        description="Where p_correct comes from: the model reading the learner's history; the "
        "model with no history (its prior for this skill and item); the training data's mean "
        "correctness on the skill, or overall (a skill the model does not know)."
    )


class DifficultyResponse(BaseModel):
    predictions: list[Prediction]
    recommended: Prediction
    target_band: tuple[float, float]
    history_length: int
    trace: list[Prediction] | None = None
    model_version: str


# ---- /v1/tutor ----------------------------------------------------------------------------


class TutorRequest(_Request):
    learner_id: Identifier
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    session_id: Identifier | None = None
    turn_id: Identifier | None = Field(
        default=None,
        description="Idempotency key: a retried turn with the same id returns the stored turn.",
    )
    answer: Answer | None = Field(default=None, description="Answer to the last exercise.")
    candidates: list[Exercise] = Field(default_factory=list, max_length=MAX_CANDIDATES)
    stream: StrictBool = Field(default=False, description="Answer with server-sent events.")
    priority: Literal["speed", "quality", "balanced"] = Field(
        default="balanced", description="What the reply's provider should be chosen for."
    )
    max_latency_ms: int | None = Field(
        default=None,
        ge=1,
        le=600_000,
        description="Preferred longest wait for the first token: providers expected to be "
        "slower are tried after the others.",
    )


class LearnerState(BaseModel):
    emotion: EmotionResult
    difficulty: DifficultyResponse | None = Field(
        description="Null when the turn named no candidate exercises."
    )


class StrategyChoice(BaseModel):
    name: Strategy
    propensity: float = Field(ge=0, le=1, description="P(this arm) under the policy that chose.")


class ProviderAttempt(BaseModel):
    provider: str
    outcome: str = Field(
        description="ok, error, rejected, rate_limited, timeout, circuit_open or not_configured"
    )
    latency_ms: float
    detail: str | None = None


class LLMUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    counted_by: Literal["provider", "estimate"] = Field(
        description="provider: the provider's own count; estimate: about 4 characters a token, "
        "for providers that report none."
    )
    cost: float = Field(description="From the provider's configured prices per 1k tokens.")


class LLMInfo(BaseModel):
    provider: str
    model: str
    attempts: list[ProviderAttempt]
    usage: LLMUsage | None = Field(
        default=None, description="Tokens and cost of the answering call (none offline)."
    )


class TutorResponse(BaseModel):
    turn_id: str
    learner_id: str
    reply: str
    learner_state: LearnerState
    strategy: StrategyChoice
    llm: LLMInfo
    model_versions: dict[str, str]
    timings_ms: dict[str, float]
    degraded: list[str] = Field(
        default_factory=list,
        description="Stages that failed and were replaced by a fallback, e.g. 'emotion: timeout'.",
    )
    new_learner: bool = False


# ---- /v1/feedback -------------------------------------------------------------------------


class FeedbackRequest(_Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["reward"], "properties": {"reward": {"type": "number"}}},
                {"required": ["answer"], "properties": {"answer": {"type": "object"}}},
            ]
        },
    )

    turn_id: Identifier
    # Strict: true or "0.5" are refused; integers 0 and 1 are numbers and accepted.
    reward: StrictFloat | None = Field(default=None, ge=0, le=1)
    answer: Answer | None = None

    @model_validator(mode="after")
    def _has_signal(self) -> FeedbackRequest:
        if self.reward is None and self.answer is None:
            raise ValueError("feedback needs a reward in [0, 1], an answer, or both")
        return self


class FeedbackResponse(BaseModel):
    turn_id: str
    accepted: bool = Field(description="False when this turn already had feedback (idempotent).")
    reward: float | None
    strategy: str
    queued: bool = Field(
        default=False,
        description="True (status 202) when the turn is still waiting in the outbox for the "
        "store: the feedback is journaled with it and applied, once, when the store takes it.",
    )


# ---- /v1/learners/{id} --------------------------------------------------------------------


class SkillMastery(BaseModel):
    skill_id: str
    name: str | None
    mastery: float = Field(ge=0, le=1, description="Model's P(correct) on this skill now.")
    attempts: int


class StrategyStats(BaseModel):
    count: int = Field(description="Recent turns that used the strategy.")
    rewarded: int = Field(description="Rewards received (explicit feedback and answers).")
    mean_reward: float | None


class Pace(BaseModel):
    median_s_between_turns: float | None = Field(
        description="Median pause between turns within a session (pauses over 30 min split "
        "sessions)."
    )
    sessions: int


class LearnerProfile(BaseModel):
    learner_id: str
    turn_count: int
    answer_count: int
    created_at: float
    last_turn_at: float | None
    mastery: list[SkillMastery]
    emotion_trend: dict[str, float] = Field(
        description="Exponentially decayed average of the eight state distributions."
    )
    pace: Pace
    strategies: dict[str, StrategyStats]
    preferred_strategy: str | None = Field(
        description="The strategy the policy's posterior mean prefers in the learner's latest "
        "context (None before a turn with a full context)."
    )
    model_version: str = Field(description="Version of the difficulty model behind `mastery`.")
    risk: LearnerRisk | None = Field(
        default=None, description="The last at-risk job's score; null until a run scored them."
    )
    degraded: list[str] = Field(
        default_factory=list, description="Parts left out because a dependency failed."
    )


# ---- /healthz -----------------------------------------------------------------------------


class ComponentHealth(BaseModel):
    ok: bool
    detail: str | None = None


class ProviderState(BaseModel):
    """One LLM provider as the router replica that answered sees it (health is per replica)."""

    configured: bool = Field(
        description="Callable: its key variable is set (or, for a local provider, the LocalLM "
        "deployment is running). An unconfigured provider is skipped."
    )
    breaker: Literal["closed", "open", "half_open"]
    retry_in_s: float = Field(description="Seconds until an open breaker lets a probe through.")
    ttft_ms: float | None = Field(
        description="Moving average of the time to first token (None before the first answer)."
    )
    error_rate: float = Field(description="Moving average of failed calls, 0 to 1.")
    requests: int = Field(description="Calls this replica has made to the provider.")


class CanaryState(BaseModel):
    version: str
    percent: float = Field(description="Share of learners (by a hash of learner_id).")


class RolloutState(BaseModel):
    """What serves whom, as the replica that answered the probe sees it."""

    champion: str = Field(description="Serves every learner outside the canary.")
    canary: CanaryState | None = None
    shadow: str | None = Field(
        default=None, description="Scores live turns too; its outputs are stored, never returned."
    )
    loaded: list[str] = Field(description="Versions in memory, any of which a request may name.")


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    deployments: dict[str, ComponentHealth]
    store: ComponentHealth
    model_versions: dict[str, str] = Field(description="Each model's champion.")
    rollouts: dict[str, RolloutState] = Field(
        default_factory=dict, description="Per model: champion, canary split, shadow, loaded."
    )
    providers: dict[str, ProviderState] = Field(
        default_factory=dict,
        description="The LLM providers in routing configuration order. Not part of `status`: "
        "with none usable, replies come from the offline responder and say so.",
    )
