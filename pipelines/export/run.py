"""One export run: for each table, the UTC days whose row count changed since the last run are
rewritten from the store; then the bandit's statistics, where they changed.

Idempotent: with nothing new in the store, a run writes no file (not even the state). A run that
stops anywhere leaves the state of the last table it finished; the next run rewrites each day
whose partition does not match its recorded count, from the same rows in the same order (ts,
then insertion), so it converges to the files one uninterrupted run writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.export import schema
from pipelines.export.files import (
    FILE_MODE,
    private_dir,
    remove_partition,
    write_bytes_if_changed,
    write_partition,
)
from pipelines.export.state import LOCK_NAME, ExportError, ExportState, check_out_dir
from store import TutorStore
from store.base import EXPORT_TABLES, SECONDS_PER_DAY, label_day, utc_day

log = logging.getLogger("pipelines.export")

# A policy's name becomes a file name: nothing that could leave bandit/ or hide the file.
_POLICY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")


@dataclass(frozen=True)
class ExportOptions:
    without_messages: bool = False  # turns' message and reply left null (personal data)
    full: bool = False  # rewrite every partition, whatever the state says
    batch_rows: int = 10_000  # rows per Parquet row group (and in memory at once)
    file_rows: int = 1_000_000  # rows per file before a day's partition gets a part-1


Reader = Callable[..., Iterator[Any]]


def _reader(store: TutorStore, table: str) -> Reader:
    return {
        "turns": store.iter_turns,
        "answers": store.iter_answers,
        "feedback": store.iter_feedback,
        "rewards": store.iter_rewards,
    }[table]


def _row_of(table: str, options: ExportOptions) -> Callable[[Any], dict[str, Any]]:
    if table == "turns":
        return lambda turn: schema.turn_row(turn, without_messages=options.without_messages)
    return {
        "answers": schema.answer_row,
        "feedback": schema.feedback_row,
        "rewards": schema.reward_row,
    }[table]


def _day_rows(store: TutorStore, table: str, day: str, options: ExportOptions) -> Iterator[dict]:
    """The rows `daily_counts` counts in `day`, oldest first (ties by insertion order).

    Read a second beyond either midnight and kept by utc_day, the same division the count
    used: a bound compared with ts and a floor of ts / 86400 can disagree a hair before midnight.
    """
    index = label_day(day)
    start = index * SECONDS_PER_DAY
    records = _reader(store, table)(since=start - 1.0, until=start + SECONDS_PER_DAY + 1.0)
    row = _row_of(table, options)
    return (row(record) for record in records if utc_day(record.ts) == index)


def _export_table(
    store: TutorStore, out: Path, table: str, state: ExportState, options: ExportOptions
) -> dict[str, Any]:
    counts = store.daily_counts(table)  # type: ignore[arg-type]
    recorded = state.table(table)
    table_dir = private_dir(out / table)
    on_disk = {p.name[4:] for p in table_dir.glob("day=*") if p.is_dir()}
    written: list[str] = []
    rows_written = 0
    for day, count in counts.items():
        partition = table_dir / f"day={day}"
        if recorded.get(day) == count and (partition / "part-0.parquet").is_file():
            continue
        recorded[day] = write_partition(
            partition,
            schema.SCHEMAS[table],
            _day_rows(store, table, day, options),
            batch_rows=options.batch_rows,
            file_rows=options.file_rows,
        )
        written.append(day)
        rows_written += recorded[day]
    for day in sorted((set(recorded) | on_disk) - set(counts)):
        remove_partition(table_dir / f"day={day}")  # no row of the store is in that day now
        recorded.pop(day, None)
    log.info(
        "%s: %d of %d days rewritten (%d rows of %d)",
        table,
        len(written),
        len(counts),
        rows_written,
        sum(counts.values()),
    )
    return {
        "days": len(counts),
        "rows": sum(recorded.values()),
        "days_written": written,
        "rows_written": rows_written,
    }


def _export_bandit(store: TutorStore, out: Path) -> list[str]:
    """``bandit/<policy>.json`` of every policy with statistics; which files changed."""
    bandit_dir = private_dir(out / "bandit")
    written = []
    for policy in store.bandit_policies():
        if not _POLICY_NAME.fullmatch(policy):
            raise ExportError(f"policy name {policy!r} cannot name a file in {bandit_dir}")
        stats = store.bandit_stats(policy)
        layout = {arm: stats[arm].model_dump(exclude={"arm"}) for arm in sorted(stats)}
        data = (json.dumps(layout) + "\n").encode()
        if write_bytes_if_changed(bandit_dir / f"{policy}.json", data):
            written.append(policy)
    return written


def _initial_state(
    previous: ExportState | None, source: str, options: ExportOptions
) -> ExportState:
    """What the run starts from: the last run's state, less what no longer holds."""
    fresh = ExportState(
        format=schema.FORMAT, store=source, without_messages=options.without_messages
    )
    if previous is None:
        return fresh
    if previous.store != source:
        raise ExportError(
            f"the export holds rows of {previous.store}, not of {source}: give another output "
            "directory, or pass --full to replace it"
        )
    if previous.format != schema.FORMAT:
        log.info("format %d -> %d: every partition is rewritten", previous.format, schema.FORMAT)
        return fresh
    state = previous.model_copy(deep=True)
    if previous.without_messages != options.without_messages:
        state.without_messages = options.without_messages
        state.days.pop("turns", None)  # every turns partition holds, or lacks, the messages
    return state


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportError(f"another export is writing {out}") from None
        yield
    finally:
        os.close(fd)


def export(
    store: TutorStore, out: Path, *, source: str, options: ExportOptions | None = None
) -> dict[str, Any]:
    """Bring the export in `out` up to date with `store`; what it found and wrote.

    `source` names the store (``state.store_identity`` of its URI): an export is refused into a
    directory that holds another store's rows.
    """
    options = options or ExportOptions()
    check_out_dir(out)
    private_dir(out)
    with _exclusive(out):
        previous = None if options.full else ExportState.load(out)  # --full mends a bad one
        state = _initial_state(previous, source, options)
        tables = {}
        for table in EXPORT_TABLES:
            tables[table] = _export_table(store, out, table, state, options)
            state.save(out)  # a later crash redoes no finished table
        bandit = _export_bandit(store, out)
    return {"out": str(out), "tables": tables, "bandit_written": bandit}
