"""The offline responder: answers from templates when no LLM provider is configured or all fail.

It always works and always says that it is offline, so a learner is never left without a reply
and never mistakes a template for a model's answer.
"""

from __future__ import annotations

from collections.abc import Iterator

from models.llm.prompts import ReplyContext

OFFLINE_PROVIDER = "offline"
OFFLINE_MODEL = "templates-v1"

_OPENERS = {
    "frustrated": "This one is tough, and it's fine to feel stuck.",
    "confused": "Let's untangle this one piece at a time.",
    "curious": "Good question to be asking.",
    "engaged": "Nice momentum.",
    "anxious": "No pressure here; mistakes are how this gets learned.",
    "breakthrough": "That sounds like it clicked!",
    "discouraged": "You've already made progress, even if it doesn't feel like it.",
    "neutral": "Let's keep going.",
}

_MOVES = {
    "socratic": (
        "What do you already know about this problem, and what is the next step you could try?"
    ),
    "worked_example": (
        "Try a similar, smaller problem first and write out each step; "
        "then apply the same steps here."
    ),
    "hint": (
        "Hint: look at what the question is really asking, "
        "and write down the quantities it gives you."
    ),
    "analogy": (
        "Think of it like something familiar: "
        "relate each part of the problem to an everyday situation."
    ),
    "quiz": "Quick check: can you explain the key idea of this skill in one sentence?",
    "review": "Let's review the idea this builds on before tackling it again.",
}


def offline_reply(context: ReplyContext) -> str:
    parts = [
        "[offline tutor: no language model is available right now]",
        _OPENERS.get(context.emotion_state, _OPENERS["neutral"]),
        _MOVES.get(context.strategy, _MOVES["hint"]),
    ]
    if context.next_exercise:
        parts.append(f"Next, try exercise {context.next_exercise['item_id']}.")
    return " ".join(parts)


def offline_tokens(context: ReplyContext) -> Iterator[str]:
    """The offline reply cut into word tokens, for the same streaming path as a provider."""
    words = offline_reply(context).split(" ")
    for i, word in enumerate(words):
        yield word if i == 0 else " " + word
