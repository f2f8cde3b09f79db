"""The LR tracer's feature layout: which groups of columns, their parameters, their offsets.

The groups are described in ``models.difficulty.lr_features``, which computes them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

BEST_LR = ("item", "skill", "total", "skill_counts", "item_counts")
EXTRA_GROUPS = (
    "recent",
    "skill_recent",
    "streak",
    "decay",
    "window",
    "gap",
    "item_last",
    "rates",
    "skill_fails",
    "skill_decay",
    "ability",
    "elo",
)
ALL_GROUPS = BEST_LR + EXTRA_GROUPS


@dataclass(frozen=True)
class FeatureSpec:
    """Which feature groups, and their parameters; the column layout follows from it."""

    num_items: int
    num_skills: int
    groups: tuple[str, ...] = ALL_GROUPS
    recent: tuple[int, ...] = (5, 20)  # last-k attempts overall
    skill_recent: tuple[int, ...] = (3, 10)  # last-k attempts on the skill
    decays: tuple[float, ...] = (0.5, 0.8)  # per-attempt-on-the-skill weight decay
    windows: tuple[int, ...] = (10, 50)  # attempts overall
    qmatrix: bool = False  # per-skill columns for all of the item's skills (``ItemTables``)
    _offsets: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = set(self.groups) - set(ALL_GROUPS)
        if unknown:
            raise ValueError(f"unknown feature groups {sorted(unknown)}; known: {ALL_GROUPS}")
        offset = 0
        for group in ALL_GROUPS:
            if group in self.groups:
                self._offsets[group] = offset
                offset += self.group_size(group)
        self._offsets["_end"] = offset

    def group_size(self, group: str) -> int:
        sizes = {
            "item": self.num_items,
            "skill": self.num_skills,
            "total": 2,
            "skill_counts": 2 * self.num_skills,
            "item_counts": 2,
            "recent": 2 * len(self.recent),
            "skill_recent": 2 * len(self.skill_recent),
            "streak": 2,
            "decay": 2 * len(self.decays),
            "window": 2 * len(self.windows),
            "gap": 3,
            "item_last": 2,
            "rates": 3,
            "skill_fails": self.num_skills,
            "skill_decay": 2 * self.num_skills,
            "ability": 2,
            "elo": 3,
        }
        return sizes[group]

    @property
    def num_features(self) -> int:
        return self._offsets["_end"]

    def offset(self, group: str) -> int | None:
        return self._offsets.get(group)

    @property
    def history_needed(self) -> int:
        """How many of a skill's latest attempts the state keeps (recent and window groups)."""
        return max((*self.skill_recent, *self.windows, 1))

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw.pop("_offsets")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in raw.items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FeatureSpec:
        return cls(
            num_items=int(raw["num_items"]),
            num_skills=int(raw["num_skills"]),
            groups=tuple(raw["groups"]),
            recent=tuple(int(k) for k in raw["recent"]),
            skill_recent=tuple(int(k) for k in raw["skill_recent"]),
            decays=tuple(float(d) for d in raw["decays"]),
            windows=tuple(int(w) for w in raw["windows"]),
            qmatrix=bool(raw.get("qmatrix", False)),
        )
