"""What the training split says about items, for the LR tracer's features (stored in the artifact).

``item_skills`` is the Q-matrix: each item's skills in the order the training rows tag them. A
multi-skill problem is logged as one row per skill, so a row alone names one of its skills;
Best-LR's Q-matrix features read all of them (``lr_features``, ``FeatureSpec.qmatrix``). An item
training never saw falls back to the row's own skill.

``item_correct`` is each item's training mean correctness, smoothed towards its first skill's
mean with ``SMOOTHING`` pseudo-attempts (items have a dozen attempts on average in
assist2009_pid), the difficulty the ``ability`` features measure a learner's answers against.
An attempt counts once per item (its rows share one response).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.difficulty.data import StudentSequence

SMOOTHING = 5.0
TABLES_FILE = "lr_item_tables.json"


@dataclass
class ItemTables:
    item_skills: dict[str, tuple[str, ...]] = field(default_factory=dict)
    item_correct: dict[str, float] = field(default_factory=dict)
    item_attempts: dict[str, int] = field(default_factory=dict)
    skill_correct: dict[str, float] = field(default_factory=dict)
    global_correct: float = 0.5
    smoothing: float = SMOOTHING

    @classmethod
    def build(
        cls,
        sequences: Iterable[StudentSequence],
        *,
        with_items: bool = True,
        smoothing: float = SMOOTHING,
    ) -> ItemTables:
        """``with_items`` False (datasets without item ids, each row its own item) keeps only
        the skill and global means."""
        skills: dict[str, dict[str, None]] = {}  # ordered sets
        item_counts: dict[str, list[int]] = {}
        skill_counts: dict[str, list[int]] = {}
        total = [0, 0]
        for seq in sequences:
            previous = None
            for item, skill, correct in zip(seq.item_ids, seq.skill_ids, seq.correct, strict=True):
                skills.setdefault(item, {})[skill] = None
                counts = skill_counts.setdefault(skill, [0, 0])
                counts[0] += correct
                counts[1] += 1
                if item != previous:  # one attempt per run of rows with one item
                    counts = item_counts.setdefault(item, [0, 0])
                    counts[0] += correct
                    counts[1] += 1
                    total[0] += correct
                    total[1] += 1
                previous = item
        global_correct = total[0] / total[1] if total[1] else 0.5
        skill_correct = {s: c / n for s, (c, n) in skill_counts.items()}
        item_correct = {}
        for item, (c, n) in item_counts.items():
            prior = skill_correct.get(next(iter(skills[item])), global_correct)
            item_correct[item] = (c + smoothing * prior) / (n + smoothing)
        if not with_items:
            return cls(skill_correct=skill_correct, global_correct=global_correct)
        return cls(
            item_skills={item: tuple(tags) for item, tags in skills.items()},
            item_correct=item_correct,
            item_attempts={item: n for item, (_, n) in item_counts.items()},
            skill_correct=skill_correct,
            global_correct=global_correct,
            smoothing=smoothing,
        )

    def leave_out(self, seq: StudentSequence) -> ItemTables:
        """These tables without ``seq``'s own attempts in the item means, for featurising a
        training learner: an item mean holding the learner's own outcome would leak the label
        of the row it describes (and shrink the learner's residuals) on train only."""
        own: dict[str, list[int]] = {}
        previous = None
        for item, correct in zip(seq.item_ids, seq.correct, strict=True):
            if item != previous and item in self.item_correct:
                counts = own.setdefault(item, [0, 0])
                counts[0] += correct
                counts[1] += 1
            previous = item
        if not own:
            return self
        item_correct = dict(self.item_correct)
        for item, (c, n) in own.items():
            weight = self.item_attempts[item] + self.smoothing
            item_correct[item] = (item_correct[item] * weight - c) / (weight - n)
        return ItemTables(
            self.item_skills,
            item_correct,
            self.item_attempts,
            self.skill_correct,
            self.global_correct,
            self.smoothing,
        )

    def skills_of(self, item_id: str, skill_id: str) -> Sequence[str]:
        """The item's skills, or the row's own skill for an item training never saw."""
        return self.item_skills.get(item_id) or (skill_id,)

    def expected(self, item_id: str, skill_id: str) -> float:
        """The item's training mean correctness; the skill's, else the global, when unseen."""
        found = self.item_correct.get(item_id)
        if found is not None:
            return found
        return self.skill_correct.get(skill_id, self.global_correct)

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_skills": {k: list(v) for k, v in self.item_skills.items()},
            "item_correct": self.item_correct,
            "item_attempts": self.item_attempts,
            "smoothing": self.smoothing,
            "skill_correct": self.skill_correct,
            "global_correct": self.global_correct,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ItemTables:
        return cls(
            item_skills={str(k): tuple(map(str, v)) for k, v in raw["item_skills"].items()},
            item_correct={str(k): float(v) for k, v in raw["item_correct"].items()},
            item_attempts={str(k): int(v) for k, v in raw["item_attempts"].items()},
            skill_correct={str(k): float(v) for k, v in raw["skill_correct"].items()},
            global_correct=float(raw["global_correct"]),
            smoothing=float(raw["smoothing"]),
        )


EMPTY_TABLES = ItemTables()
