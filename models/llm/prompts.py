"""Chat prompts built from what the other models found about the learner.

The learner's own text only ever goes into ``user`` messages: the system prompt is built from
the strategy, the emotion state and the mastery alone, so a learner cannot rewrite it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STRATEGY_INSTRUCTIONS: dict[str, str] = {
    "socratic": "Guide with one or two questions that lead the learner to the next step.",
    "worked_example": "Show a short worked example of a similar problem, step by step.",
    "hint": "Give one concise hint toward the next step; do not give the full answer.",
    "analogy": "Explain the idea through a concrete everyday analogy.",
    "quiz": "Ask one short practice question that checks the key idea.",
    "review": "Briefly recap the prerequisite idea the learner needs, then connect it.",
}

STATE_TONE: dict[str, str] = {
    "frustrated": "The learner seems frustrated: acknowledge it briefly and keep steps small.",
    "confused": "The learner seems confused: slow down and clarify one thing at a time.",
    "curious": "The learner seems curious: feed the curiosity with a why.",
    "engaged": "The learner seems engaged: keep the momentum.",
    "anxious": "The learner seems anxious: reassure and lower the stakes.",
    "breakthrough": "The learner seems to have just understood: confirm and consolidate.",
    "discouraged": "The learner seems discouraged: point to their progress and encourage.",
    "neutral": "Keep a warm, neutral tone.",
}


@dataclass(frozen=True)
class ReplyContext:
    """Everything the router needs to answer one turn; plain data so it crosses processes."""

    message: str
    strategy: str
    emotion_state: str
    mastery: float | None = None  # the learner's mean mastery, when known
    next_exercise: dict | None = None  # the recommended {item_id, skill_id, p_correct}
    history: list[tuple[str, str]] = field(default_factory=list)  # (learner, tutor) past turns
    priority: str = "balanced"  # the client's wish: speed, quality or balanced
    max_latency_ms: float | None = None  # the client's budget for the first token


def system_prompt(context: ReplyContext) -> str:
    parts = [
        "You are a patient, encouraging tutor. Answer in at most 120 words.",
        STRATEGY_INSTRUCTIONS.get(context.strategy, STRATEGY_INSTRUCTIONS["hint"]),
        STATE_TONE.get(context.emotion_state, STATE_TONE["neutral"]),
    ]
    if context.mastery is not None:
        parts.append(f"Estimated mastery of the current skills: {context.mastery:.0%}.")
    return " ".join(parts)


def chat_messages(context: ReplyContext, *, memory_turns: int = 4) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system_prompt(context)}]
    past = context.history[-memory_turns:] if memory_turns > 0 else []
    for learner_text, tutor_text in past:
        messages.append({"role": "user", "content": learner_text})
        messages.append({"role": "assistant", "content": tutor_text})
    messages.append({"role": "user", "content": context.message})
    return messages
