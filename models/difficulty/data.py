"""Knowledge-tracing data: parsing the AKT-format files, the vocabulary, and attempt grouping.

File format (``{dataset}_{train,valid,test}{k}.csv`` from the AKT repository), 4 lines per
student for datasets with problem ids (``assist2009_pid``)::

    1274,82295                 <- student index (user.json's value), original ASSISTments user id
    1366,1366,1424,...         <- problem ids (problems.json's values)
    7,9,7,...                  <- skill ids (skill.json's values)
    1,1,0,...                  <- responses (1 correct, 0 wrong)

The data README calls the header ``student_index,num_rows``; its second field is in fact the
original user id (it maps back through ``user.json``), not the number of rows. Three-line
datasets (header, skills, responses; no problem ids) are read with each row its own item.

Multi-skill problems: a problem tagged with several skills appears as consecutive rows with the
same problem id and the same response. Those rows are one attempt, and a prediction for any of
them must not see the response of any of them: see :func:`attempt_context_index`.

No file I/O happens here except in the explicit ``read_*``/``load_*`` functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UNKNOWN_INDEX = 0  # index 0 of both vocabularies: an id not seen in training (and padding)


@dataclass(frozen=True)
class StudentSequence:
    """One student's rows in time order; ids are the dataset's ids, kept as strings."""

    student: str
    item_ids: list[str]
    skill_ids: list[str]
    correct: list[int]

    def __len__(self) -> int:
        return len(self.correct)

    def window(self, start: int, stop: int) -> StudentSequence:
        return StudentSequence(
            student=self.student,
            item_ids=self.item_ids[start:stop],
            skill_ids=self.skill_ids[start:stop],
            correct=self.correct[start:stop],
        )


def _fields(line: str) -> list[str]:
    return [f.strip() for f in line.strip().split(",") if f.strip() != ""]


def parse_akt_lines(lines: Sequence[str], *, lines_per_student: int = 4) -> list[StudentSequence]:
    """Parse AKT-format lines (blank lines ignored) into sequences; raises on ragged records."""
    if lines_per_student not in (3, 4):
        raise ValueError(f"lines_per_student must be 3 or 4, got {lines_per_student}")
    rows = [line for line in lines if line.strip()]
    if len(rows) % lines_per_student:
        raise ValueError(f"{len(rows)} lines is not a multiple of {lines_per_student}")
    sequences = []
    for i in range(0, len(rows), lines_per_student):
        header = _fields(rows[i])
        if lines_per_student == 4:
            items, skills, responses = (_fields(r) for r in rows[i + 1 : i + 4])
        else:
            skills, responses = (_fields(r) for r in rows[i + 1 : i + 3])
            items = [f"{header[0]}:{t}" for t in range(len(skills))]  # each row its own item
        if not len(items) == len(skills) == len(responses):
            raise ValueError(
                f"student {header}: {len(items)} items, {len(skills)} skills, "
                f"{len(responses)} responses"
            )
        correct = [int(r) for r in responses]
        if any(c not in (0, 1) for c in correct):
            raise ValueError(f"student {header}: responses must be 0/1")
        sequences.append(
            StudentSequence(student=header[0], item_ids=items, skill_ids=skills, correct=correct)
        )
    return sequences


def read_akt_file(path: Path | str, *, lines_per_student: int = 4) -> list[StudentSequence]:
    return parse_akt_lines(Path(path).read_text().splitlines(), lines_per_student=lines_per_student)


def split_path(data_dir: Path | str, dataset: str, split: str, fold: int) -> Path:
    """``<data_dir>/<dataset>/<dataset>_<split><fold>.csv`` (split: train, valid or test)."""
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be train, valid or test; got {split!r}")
    return Path(data_dir) / dataset / f"{dataset}_{split}{fold}.csv"


def has_item_ids(dataset: str) -> bool:
    """Whether the dataset's files carry problem ids (4 lines per student): ``*_pid``."""
    return dataset.endswith("_pid")


def load_split(data_dir: Path | str, dataset: str, split: str, fold: int) -> list[StudentSequence]:
    lines_per_student = 4 if has_item_ids(dataset) else 3
    return read_akt_file(
        split_path(data_dir, dataset, split, fold), lines_per_student=lines_per_student
    )


def read_skill_names(path: Path | str) -> dict[str, str]:
    """``skill.json`` (name -> id) inverted into skill id (string) -> name."""
    raw = json.loads(Path(path).read_text())
    return {str(skill_id): name for name, skill_id in raw.items()}


def attempt_context_index(item_ids: Sequence[str]) -> list[int]:
    """For each row, the last row a leak-free prediction of that row may see (-1: none).

    Consecutive rows with the same item id form one attempt (a multi-skill problem is logged as
    one row per skill, all sharing the response). A row's prediction may use only the rows of
    earlier attempts, so the context of every row of an attempt is the row just before the
    attempt starts, or -1 (the initial state) for the first attempt. Example::

        item_ids  a  b  b  b  c  c  d
        context  -1  0  0  0  3  3  5

    A row's prediction reads the model's state after its context row (state index
    ``context + 1`` when state 0 is the initial state). Two genuinely separate consecutive
    attempts at the same problem are merged by this rule, which only ever hides information.
    """
    context: list[int] = []
    start_context = -1
    for t, item in enumerate(item_ids):
        if t > 0 and item != item_ids[t - 1]:
            start_context = t - 1
        context.append(start_context)
    return context


def per_row_context_index(length: int) -> list[int]:
    """The leaky per-row protocol of early DKT papers: row t sees every row before it."""
    return list(range(-1, length - 1))


@dataclass
class Vocabulary:
    """Dataset ids (strings) -> model indices; index 0 is reserved for ids unseen in training."""

    skills: list[str]  # skills[i - 1] is the id of skill index i
    items: list[str]

    def __post_init__(self) -> None:
        self._skill_index = {s: i + 1 for i, s in enumerate(self.skills)}
        self._item_index = {s: i + 1 for i, s in enumerate(self.items)}

    @classmethod
    def build(cls, sequences: Iterable[StudentSequence], *, with_items: bool = True) -> Vocabulary:
        """``with_items=False`` for datasets without item ids (rows carry made-up ones)."""
        skills: set[str] = set()
        items: set[str] = set()
        for seq in sequences:
            skills.update(seq.skill_ids)
            if with_items:
                items.update(seq.item_ids)
        return cls(skills=sorted(skills, key=_id_sort_key), items=sorted(items, key=_id_sort_key))

    @property
    def num_skills(self) -> int:
        """Number of known skills; model outputs have ``num_skills + 1`` entries (0: unknown)."""
        return len(self.skills)

    def skill_index(self, skill_id: str) -> int:
        return self._skill_index.get(skill_id, UNKNOWN_INDEX)

    def item_index(self, item_id: str) -> int:
        return self._item_index.get(item_id, UNKNOWN_INDEX)

    def has_skill(self, skill_id: str) -> bool:
        return skill_id in self._skill_index

    def has_item(self, item_id: str) -> bool:
        return item_id in self._item_index

    def to_dict(self) -> dict[str, Any]:
        return {"skills": list(self.skills), "items": list(self.items)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Vocabulary:
        return cls(skills=[str(s) for s in raw["skills"]], items=[str(i) for i in raw["items"]])


def _id_sort_key(value: str) -> tuple[int, int | str]:
    return (0, int(value)) if value.isdigit() else (1, value)


@dataclass(frozen=True)
class Priors:
    """Mean correctness of the training rows: overall and per skill (the cold fallbacks)."""

    global_prior: float
    skill_priors: dict[str, float]

    @classmethod
    def compute(cls, sequences: Iterable[StudentSequence]) -> Priors:
        total = correct = 0
        per_skill: dict[str, list[int]] = {}
        for seq in sequences:
            for skill, c in zip(seq.skill_ids, seq.correct, strict=True):
                counts = per_skill.setdefault(skill, [0, 0])
                counts[0] += c
                counts[1] += 1
                correct += c
                total += 1
        if total == 0:
            raise ValueError("no rows to compute priors from")
        return cls(
            global_prior=correct / total,
            skill_priors={s: c / n for s, (c, n) in sorted(per_skill.items())},
        )

    def for_skill(self, skill_id: str) -> float:
        return self.skill_priors.get(skill_id, self.global_prior)

    def to_dict(self) -> dict[str, Any]:
        return {"global": self.global_prior, "skills": dict(self.skill_priors)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Priors:
        return cls(
            global_prior=float(raw["global"]),
            skill_priors={str(k): float(v) for k, v in raw["skills"].items()},
        )


def windows(sequences: Iterable[StudentSequence], max_len: int) -> list[StudentSequence]:
    """Split each sequence into consecutive non-overlapping windows of at most ``max_len`` rows.

    Each window starts from the model's initial state (the pyKT convention for training and
    evaluation). A window boundary can fall inside an attempt; the attempt's rows in the new
    window then see only the initial state, which is still leak-free.
    """
    if max_len < 1:
        raise ValueError("max_len must be >= 1")
    out = []
    for seq in sequences:
        for start in range(0, len(seq), max_len):
            out.append(seq.window(start, start + max_len))
    return out
