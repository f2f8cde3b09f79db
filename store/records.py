"""Internal records the store persists (not the HTTP API: those live in deployments.schemas).

Every record round-trips exactly through both backends, so a model can be rebuilt from what a
replica wrote without caring which backend held it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Record(BaseModel):
    # Forbid unknown fields so a typo in a caller's keyword fails loudly instead of being dropped.
    model_config = ConfigDict(extra="forbid")


class LearnerRecord(_Record):
    learner_id: str
    created_at: float  # epoch seconds
    turn_count: int = 0
    last_turn_at: float | None = None


class AnswerRecord(_Record):
    learner_id: str
    # Idempotency key chosen by the caller (e.g. "<turn_id>:answer"), so a retried turn cannot
    # append the same answer twice to the history the knowledge-tracing model reads.
    source_id: str
    item_id: str
    skill_id: str
    correct: bool
    ts: float


# A list of answers validated in one call (a turn reads up to 1000 of them).
ANSWER_LIST = TypeAdapter(list[AnswerRecord])


class TurnRecord(_Record):
    # Frozen: a stored turn never changes (insert-only), so the stores hand the same parsed
    # record to every reader (store/parsed_turns.py); its nested dicts are read-only too.
    model_config = ConfigDict(extra="forbid", frozen=True)

    turn_id: str
    learner_id: str
    session_id: str | None = None
    ts: float
    request_id: str
    message: str
    reply: str
    emotion: dict[str, Any]
    difficulty: dict[str, Any]
    strategy: str
    propensity: float
    context: list[float]  # the bandit's feature vector, kept for off-policy evaluation
    provider: str
    model: str
    llm_attempts: list[dict[str, Any]] = Field(default_factory=list)  # each provider tried
    model_versions: dict[str, str]
    timings_ms: dict[str, float]
    degraded: list[str] = Field(default_factory=list)


class FeedbackRecord(_Record):
    turn_id: str
    learner_id: str
    reward: float | None = None
    # An exercise answer may arrive together with the feedback on the turn that asked it.
    item_id: str | None = None
    skill_id: str | None = None
    correct: bool | None = None
    ts: float


class RewardRecord(_Record):
    """A reward for the strategy a turn chose: one per turn and source.

    ``explicit`` comes from /v1/feedback; ``answer`` from the learner's answer to that turn's
    exercise (sent with /v1/feedback or with the learner's next /v1/tutor message).
    """

    turn_id: str
    learner_id: str
    source: Literal["explicit", "answer"]
    policy: str  # the policy that chose the strategy, whose statistics learn from it
    strategy: str
    reward: float
    ts: float


class ArmStats(_Record):
    arm: str
    n: int = 0
    reward_sum: float = 0.0
    a: list[float] = Field(default_factory=list)  # d*d, row-major: sum of x x^T
    b: list[float] = Field(default_factory=list)  # d: sum of reward * x

    @property
    def dim(self) -> int:
        return len(self.b)


# ---- model lifecycle ------------------------------------------------------------------------


class RolloutEventRecord(_Record):
    """One change to a model's rollout: the promotion history the `tutor` command writes."""

    # Idempotency key chosen by the writer, so a retried command or a guardrail that fires on
    # several replicas at once records the change once.
    event_id: str
    model: str  # emotion | difficulty | personalization
    action: Literal["promote", "canary", "shadow", "end_canary", "end_shadow", "rollback"]
    from_version: str | None = None
    to_version: str | None = None
    percent: float | None = None
    reason: str = ""
    actor: str  # "cli:<user>" or "guardrail"
    ts: float  # epoch seconds


class ShadowOutputRecord(_Record):
    """What a shadow version would have answered on a turn another version served."""

    turn_id: str
    learner_id: str
    model: str
    version: str  # the shadow version that produced `output`
    served_version: str  # the version that served the turn
    # emotion: {"state", "states"}; difficulty: {"predictions": [...], "recommended_item_id"};
    # personalization: {"strategy", "propensity"}
    output: dict[str, Any]
    ts: float


class ServingStatsRecord(_Record):
    """One replica's request counts for one version over one window."""

    model: str
    version: str
    replica: str
    window_start: float
    window_end: float
    requests: int
    errors: int
    # Per bucket of deployments.lifecycle.serving_stats.LATENCY_BOUNDS_MS, the last = overflow.
    latency_counts: list[int]


# ---- learners at risk ------------------------------------------------------------------------


class RiskReasonRecord(_Record):
    code: str  # the reason's group (models.difficulty.risk.REASONS) or disengagement signal
    kind: Literal["risk", "disengagement"]
    text: str
    weight: float  # log-odds added (risk) or the signal's value (disengagement)


class LearnerRiskRecord(_Record):
    """A learner's latest score from the at-risk job (pipelines/difficulty/at_risk.py): one per
    learner, replaced by a later run's."""

    learner_id: str
    risk: float | None  # P(the next 10 answers' accuracy < 0.5); None without answers
    disengagement: float | None  # None without turns
    reasons: list[RiskReasonRecord] = Field(default_factory=list)
    scored_at: float  # the job run's time (epoch seconds): the newest run's record stands
    model_version: str
    run_id: str


# ---- API keys -------------------------------------------------------------------------------

# What a key may do (deployments/security/policy.py maps routes to them).
ApiScope = Literal["tutor", "learners:read", "admin"]
API_SCOPES: tuple[str, ...] = ("tutor", "learners:read", "admin")


class ApiKeyRecord(_Record):
    """A client's API key, as stored: never the key itself, only its SHA-256 (hex)."""

    name: str  # unique among keys not revoked; an operator's handle for list and revoke
    key_hash: str
    scopes: list[ApiScope]
    tenant: str | None = None  # a tenant-bound key reads and writes only that tenant's learners
    rpm: int = Field(ge=1)  # requests per minute
    max_concurrent_turns: int = Field(ge=1)
    created_at: float
    revoked_at: float | None = None
