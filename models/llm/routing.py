"""Which provider answers a turn first: a score from the turn, the client's wishes and health.

The score is a weighted sum of three things a provider offers, weighted by what the turn needs:

- quality: 1.0 for a provider tagged ``strong``, 0.3 for one tagged only ``fast`` (a small
  model, as a rule), 0.5 otherwise;
- speed: 1 / (1 + expected time to first token in seconds), where the expectation is the
  observed moving average, or a prior from the tags (``fast``: 300 ms, else 1 s) until observed;
- cheapness: 1 - cost / the dearest provider's cost, for the turn's estimated tokens;

and multiplied by reliability (1 - the moving error rate). What the turn needs comes from the
client's ``priority`` (speed, quality or balanced) and from the learner: Socratic questioning,
worked examples and analogies need a stronger model, a hard exercise a little more; a frustrated
or anxious learner should not wait. Providers whose expected time to first token is over the
client's ``max_latency_ms`` go after those within it (never dropped: a slow answer still beats
the offline one). Ties go to the lower configured ``priority``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Priority = Literal["speed", "quality", "balanced"]

NEEDS_REASONING = frozenset({"socratic", "worked_example", "analogy"})
NEEDS_SPEED = frozenset({"frustrated", "anxious"})
PRIOR_TTFT_MS = {"fast": 300.0}
DEFAULT_PRIOR_TTFT_MS = 1000.0
COST_WEIGHT = 0.3
CHARS_PER_TOKEN = 4  # about, in English: for text whose tokens no provider has counted


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // CHARS_PER_TOKEN) if text else 0


@dataclass(frozen=True)
class ProviderProfile:
    """What routing needs to know of a configured provider."""

    name: str
    tags: frozenset[str] = frozenset()
    cost_per_1k_input: float = 0.0
    cost_per_1k_output: float = 0.0
    priority: int = 100


@dataclass
class ProviderHealth:
    """Moving averages of a provider's time to first token and error rate."""

    alpha: float = 0.2  # weight of the newest observation
    ttft_ms: float | None = None
    error_rate: float = 0.0
    requests: int = 0
    errors: int = 0

    def record(self, *, ok: bool, ttft_ms: float | None = None) -> None:
        self.requests += 1
        self.errors += not ok
        self.error_rate += self.alpha * ((0.0 if ok else 1.0) - self.error_rate)
        if ttft_ms is not None:
            previous = self.ttft_ms if self.ttft_ms is not None else ttft_ms
            self.ttft_ms = previous + self.alpha * (ttft_ms - previous)


@dataclass(frozen=True)
class TurnNeeds:
    """What the turn asks of its reply (from the request and the other models' findings)."""

    priority: Priority = "balanced"
    max_latency_ms: float | None = None
    strategy: str | None = None
    emotion_state: str | None = None
    p_correct: float | None = None
    input_tokens: int = 500
    output_tokens: int = 300


@dataclass(frozen=True)
class RankedProvider:
    name: str
    score: float
    expected_ttft_ms: float
    within_latency: bool


def turn_weights(needs: TurnNeeds) -> dict[str, float]:
    """How much the turn values quality, speed and cheapness."""
    quality, speed = {"speed": (0.2, 1.0), "quality": (1.0, 0.2), "balanced": (0.5, 0.5)}[
        needs.priority
    ]
    if needs.strategy in NEEDS_REASONING:
        quality += 0.2
    if needs.p_correct is not None and needs.p_correct < 0.5:
        quality += 0.1
    if needs.emotion_state in NEEDS_SPEED:
        speed += 0.3
    return {"quality": quality, "speed": speed, "cost": COST_WEIGHT}


def expected_ttft_ms(profile: ProviderProfile, health: ProviderHealth | None) -> float:
    if health is not None and health.ttft_ms is not None:
        return health.ttft_ms
    priors = [PRIOR_TTFT_MS[tag] for tag in profile.tags if tag in PRIOR_TTFT_MS]
    return min(priors, default=DEFAULT_PRIOR_TTFT_MS)


def tag_quality(tags: frozenset[str]) -> float:
    if "strong" in tags:
        return 1.0
    return 0.3 if "fast" in tags else 0.5


def turn_cost(profile: ProviderProfile, needs: TurnNeeds) -> float:
    return (
        needs.input_tokens / 1000 * profile.cost_per_1k_input
        + needs.output_tokens / 1000 * profile.cost_per_1k_output
    )


def rank_providers(
    profiles: Sequence[ProviderProfile],
    health: Mapping[str, ProviderHealth],
    needs: TurnNeeds,
) -> list[RankedProvider]:
    """The providers in the order to try them, best first."""
    weights = turn_weights(needs)
    dearest = max((turn_cost(p, needs) for p in profiles), default=0.0)
    ranked = []
    for profile in profiles:
        ttft = expected_ttft_ms(profile, health.get(profile.name))
        quality = tag_quality(profile.tags)
        speed = 1.0 / (1.0 + ttft / 1000.0)
        cheapness = 1.0 - turn_cost(profile, needs) / dearest if dearest > 0 else 1.0
        reliability = 1.0 - (health[profile.name].error_rate if profile.name in health else 0.0)
        score = reliability * (
            weights["quality"] * quality + weights["speed"] * speed + weights["cost"] * cheapness
        )
        within = needs.max_latency_ms is None or ttft <= needs.max_latency_ms
        ranked.append(RankedProvider(profile.name, round(score, 4), round(ttft, 1), within))
    order = {p.name: (p.priority, i) for i, p in enumerate(profiles)}
    return sorted(ranked, key=lambda r: (not r.within_latency, -r.score, order[r.name]))
