"""The storage interface every backend implements, and the checks they share.

Several Ray replica processes write to one store at once, so every method that reads and then
writes is atomic in the backend, never a read in Python followed by a separate write.
"""

from __future__ import annotations

import abc
import datetime as dt
import math
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Literal

from store.records import (
    AnswerRecord,
    ApiKeyRecord,
    ArmStats,
    FeedbackRecord,
    LearnerRecord,
    LearnerRiskRecord,
    RewardRecord,
    RolloutEventRecord,
    ServingStatsRecord,
    ShadowOutputRecord,
    TurnRecord,
)

# The append-only tables an export copies, each with a ts (epoch seconds, UTC).
ExportTable = Literal["turns", "answers", "feedback", "rewards"]
EXPORT_TABLES: tuple[ExportTable, ...] = ("turns", "answers", "feedback", "rewards")
SECONDS_PER_DAY = 86400.0
AnswerRow = tuple[str, str, bool]  # (item_id, skill_id, correct), oldest first


class StoreError(RuntimeError):
    """The backend failed or is unreachable (as opposed to a caller error, which is ValueError)."""


class TutorStore(abc.ABC):
    """Learners, turns, answers, feedback, the bandit's additive statistics, and the model
    lifecycle's records (rollout history, shadow outputs, serving counts)."""

    # ---- health -----------------------------------------------------------------------------

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise StoreError when the backend cannot be reached."""

    # ---- learners ---------------------------------------------------------------------------

    @abc.abstractmethod
    def get_learner(self, learner_id: str) -> LearnerRecord | None: ...

    @abc.abstractmethod
    def get_or_create_learner(self, learner_id: str, *, now: float) -> tuple[LearnerRecord, bool]:
        """Return the learner and whether this call created it.

        Race-safe: concurrent callers all succeed, exactly one sees True, all see one record.
        """

    # ---- answers ----------------------------------------------------------------------------

    @abc.abstractmethod
    def add_answer(self, answer: AnswerRecord) -> bool:
        """Insert unless (learner_id, source_id) exists; False when it did (nothing changed)."""

    @abc.abstractmethod
    def answers(self, learner_id: str, *, limit: int = 1000) -> list[AnswerRecord]:
        """The newest `limit` answers, oldest first (ties by insertion order)."""

    @abc.abstractmethod
    def answer_count(self, learner_id: str) -> int:
        """How many answers the learner has: where the newest ``limit`` of them start."""

    def answer_rows(self, learner_id: str, *, limit: int = 1000) -> list[AnswerRow]:
        """``answers`` as ``(item_id, skill_id, correct)`` rows, the difficulty model's input.

        Every turn reads up to 1,000 of them: the backends override this to skip building a
        record per row (3-4x faster on SQLite at 1,000 rows)."""
        return [(a.item_id, a.skill_id, a.correct) for a in self.answers(learner_id, limit=limit)]

    # ---- turns ------------------------------------------------------------------------------

    @abc.abstractmethod
    def save_turn(self, turn: TurnRecord) -> bool:
        """Insert unless turn_id exists (then False and the stored turn stays as it was).

        On insert only, and atomically with it where the backend allows, the learner's
        turn_count grows by one and last_turn_at becomes max(last_turn_at, turn.ts); the learner
        is created (created_at = turn.ts) when missing.
        """

    @abc.abstractmethod
    def get_turn(self, turn_id: str) -> TurnRecord | None: ...

    @abc.abstractmethod
    def recent_turns(self, learner_id: str, *, limit: int = 20) -> list[TurnRecord]:
        """The newest `limit` turns, oldest first (ties by insertion order)."""

    # ---- feedback ---------------------------------------------------------------------------

    @abc.abstractmethod
    def add_feedback(self, feedback: FeedbackRecord) -> bool:
        """One feedback per turn: a second one returns False and changes nothing."""

    @abc.abstractmethod
    def get_feedback(self, turn_id: str) -> FeedbackRecord | None: ...

    # ---- rewards ----------------------------------------------------------------------------

    @abc.abstractmethod
    def add_reward(self, reward: RewardRecord, *, context: Sequence[float] | None) -> bool:
        """Insert unless (turn_id, source) exists; False when it did (nothing changed).

        On insert, with a context, the observation (context, reward) is added to the arm
        ``reward.strategy`` of ``reward.policy`` as by add_arm_observation: in one transaction
        where the backend has them (SQLite), else right after the insert (MongoDB without a
        replica set), so a crash in between can lose that one update but never count it twice.
        """

    @abc.abstractmethod
    def learner_rewards(self, learner_id: str, *, limit: int = 1000) -> list[RewardRecord]:
        """The newest `limit` rewards of the learner's turns, oldest first."""

    # ---- export -----------------------------------------------------------------------------
    # Reads by time across learners, for exports, offline evaluation and online metrics: each
    # yields the rows with since <= ts < until (either bound may be None), oldest first, ties by
    # insertion order, read in batches so a writer is never held up for a whole export.

    @abc.abstractmethod
    def iter_turns(
        self, *, since: float | None = None, until: float | None = None, batch_size: int = 500
    ) -> Iterator[TurnRecord]:
        """Every turn with since <= ts < until."""

    @abc.abstractmethod
    def iter_rewards(
        self, *, since: float | None = None, until: float | None = None, batch_size: int = 500
    ) -> Iterator[RewardRecord]:
        """Every reward with since <= ts < until."""

    @abc.abstractmethod
    def iter_answers(
        self, *, since: float | None = None, until: float | None = None, batch_size: int = 500
    ) -> Iterator[AnswerRecord]:
        """Every answer of every learner with since <= ts < until."""

    @abc.abstractmethod
    def iter_feedback(
        self, *, since: float | None = None, until: float | None = None, batch_size: int = 500
    ) -> Iterator[FeedbackRecord]:
        """Every feedback with since <= ts < until."""

    @abc.abstractmethod
    def daily_counts(self, table: ExportTable) -> dict[str, int]:
        """How many rows of `table` each UTC day holds: {"YYYY-MM-DD": count}, days with rows only.

        A row's day is ``utc_day(ts)``, computed the same way in every backend, so that an export
        can find the days that gained rows (late rows keep their original ts) without reading them.
        """

    @abc.abstractmethod
    def bandit_policies(self) -> list[str]:
        """The policies with statistics (at least one arm with an observation), sorted."""

    # ---- model lifecycle --------------------------------------------------------------------

    @abc.abstractmethod
    def add_rollout_event(self, event: RolloutEventRecord) -> bool:
        """Insert unless event_id exists; False when it did (nothing changed)."""

    @abc.abstractmethod
    def rollout_events(
        self, model: str | None = None, *, limit: int = 100
    ) -> list[RolloutEventRecord]:
        """The newest `limit` events (of `model`, or of every model), oldest first."""

    def add_shadow_output(self, record: ShadowOutputRecord) -> bool:
        """Insert unless (turn_id, model, version) exists; False when it did (nothing changed)."""
        return self.add_shadow_outputs([record]) == 1

    @abc.abstractmethod
    def add_shadow_outputs(self, records: Sequence[ShadowOutputRecord]) -> int:
        """Insert each unless its (turn_id, model, version) exists, in one write where the
        backend can (a replica buffers its shadow outputs: one write per flush, not per turn);
        how many were new."""

    @abc.abstractmethod
    def iter_shadow_outputs(
        self, model: str, *, since: float | None = None, batch_size: int = 500
    ) -> Iterator[ShadowOutputRecord]:
        """Every shadow output of `model` with ts >= since (all when None), oldest first."""

    @abc.abstractmethod
    def add_serving_stats(self, record: ServingStatsRecord) -> None:
        """Append one window's counts (windows are additive: readers sum them)."""

    @abc.abstractmethod
    def serving_stats(self, model: str, *, since: float | None = None) -> list[ServingStatsRecord]:
        """Every window of `model` with window_end >= since (all when None), oldest first."""

    # ---- bandit -----------------------------------------------------------------------------

    @abc.abstractmethod
    def add_arm_observation(
        self, policy: str, arm: str, *, x: Sequence[float], reward: float
    ) -> None:
        """Atomically a += outer(x, x), b += reward * x, n += 1, reward_sum += reward.

        Raises ValueError when the arm's stored dimension differs from len(x).
        """

    @abc.abstractmethod
    def bandit_stats(self, policy: str) -> dict[str, ArmStats]:
        """Every arm of `policy` with at least one observation."""

    # ---- learners at risk -------------------------------------------------------------------

    @abc.abstractmethod
    def put_learner_risks(self, records: Sequence[LearnerRiskRecord]) -> int:
        """Upsert each by learner_id unless the stored record has a later ``scored_at`` (a rerun
        of a run writes the same again; an older run finishing late changes nothing); how many
        were written."""

    @abc.abstractmethod
    def learner_risk(self, learner_id: str) -> LearnerRiskRecord | None: ...

    # ---- API keys ---------------------------------------------------------------------------

    @abc.abstractmethod
    def add_api_key(self, record: ApiKeyRecord) -> bool:
        """Insert unless a key not revoked has this name (then False, nothing changed). A
        revoked key's name may be used again."""

    @abc.abstractmethod
    def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash, revoked or not (the caller refuses a revoked one)."""

    @abc.abstractmethod
    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, revoked ones included, oldest first."""

    @abc.abstractmethod
    def revoke_api_key(self, name: str, *, now: float) -> bool:
        """Mark the live key of this name revoked at ``now``; False when there is none."""

    # ---- lifecycle --------------------------------------------------------------------------

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; safe to call twice."""

    def __enter__(self) -> TutorStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def check_observation(x: Sequence[float], reward: float) -> list[float]:
    """Validate a bandit observation before it reaches shared state.

    A NaN or infinity would poison the arm's statistics for every replica forever, so it is
    refused here rather than cleaned up later.
    """
    values = [float(v) for v in x]
    if not values:
        raise ValueError("a bandit observation needs a non-empty feature vector")
    if not all(math.isfinite(v) for v in values) or not math.isfinite(float(reward)):
        raise ValueError("bandit features and reward must be finite numbers")
    return values


def check_batch_size(batch_size: int) -> int:
    # SQLite reads a negative LIMIT as "no limit" and Mongo a batch size of 0 as "the default":
    # refusing both keeps the backends alike instead of each reading it its own way.
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return batch_size


def outer_flat(x: Sequence[float]) -> list[float]:
    """outer(x, x) flattened row-major, the layout ArmStats.a uses."""
    return [xi * xj for xi in x for xj in x]


def dimension_error(policy: str, arm: str, stored: int, given: int) -> ValueError:
    return ValueError(
        f"bandit {policy!r}/{arm!r} holds statistics of dimension {stored}, "
        f"got a feature vector of length {given}"
    )


def utc_day(ts: float) -> int:
    """The UTC day of an epoch time, as days since 1970-01-01: floor(ts / 86400).

    One IEEE division and a floor, which SQL, MongoDB's $divide/$floor and Python compute alike,
    so a row is counted in the day that a reader of that day puts it in, even a hair before
    midnight (where ts >= day * 86400 and the rounded quotient could disagree).
    """
    return math.floor(ts / SECONDS_PER_DAY)


def day_label(day: int) -> str:
    """``utc_day``'s day as "YYYY-MM-DD"."""
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def label_day(label: str) -> int:
    """The inverse of ``day_label``."""
    return (dt.date.fromisoformat(label) - dt.date(1970, 1, 1)).days


def check_export_table(table: str) -> ExportTable:
    if table not in EXPORT_TABLES:
        raise ValueError(f"unknown table {table!r}: expected one of {', '.join(EXPORT_TABLES)}")
    return table  # type: ignore[return-value]
