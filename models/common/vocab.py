"""Fixed names shared by every part of the tutor: learning states, strategies, GoEmotions labels."""

from typing import Final

LEARNING_STATES: Final[tuple[str, ...]] = (
    "frustrated",
    "confused",
    "curious",
    "engaged",
    "anxious",
    "breakthrough",
    "discouraged",
    "neutral",
)

STRATEGIES: Final[tuple[str, ...]] = (
    "socratic",
    "worked_example",
    "hint",
    "analogy",
    "quiz",
    "review",
)

# GoEmotions label ids in order (the dataset's labels.txt); id 27 is neutral.
GOEMOTIONS_LABELS: Final[tuple[str, ...]] = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion",
    "curiosity", "desire", "disappointment", "disapproval", "disgust", "embarrassment",
    "excitement", "fear", "gratitude", "grief", "joy", "love", "nervousness", "optimism",
    "pride", "realization", "relief", "remorse", "sadness", "surprise", "neutral",
)  # fmt: skip
