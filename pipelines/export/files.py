"""The export's files: owner-only, replaced atomically, and only written when they change.

Messages are personal data, so every directory is 0700 and every file 0600 from its creation
(never created wider and narrowed later). A file is written beside its final name under a
``_tmp-`` name, fsynced, then renamed over it: a reader or a crash sees the old file or the new
one, never half of one. Readers skip the temporary names: pyarrow and Ray Data ignore names
starting with ``_`` or ``.``, and they do not end in ``.parquet``.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from store.outbox import fsync_directory

DIR_MODE = 0o700
FILE_MODE = 0o600
TMP_PREFIX = "_tmp-"
PART = re.compile(r"part-(\d+)\.parquet")


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) owner-only; narrow it if it exists wider."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != DIR_MODE:
        path.chmod(DIR_MODE)
    return path


@contextlib.contextmanager
def _private_tmp(final: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """A new owner-only file beside `final`, removed unless the caller renamed it."""
    tmp = final.with_name(f"{TMP_PREFIX}{final.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)  # a crashed run of this same pid: nothing else writes it
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, tmp
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_if_changed(path: Path, data: bytes) -> bool:
    """Atomically replace `path` with `data` unless it holds exactly that; whether it wrote."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_bytes() == data:
            return False
    with _private_tmp(path) as (f, tmp):
        f.write(data)
    os.replace(tmp, path)
    fsync_directory(path.parent)
    return True


def remove_temporaries(directory: Path) -> None:
    """What a crashed run left behind in `directory` (never read: see the module docstring)."""
    for leftover in directory.glob(f"{TMP_PREFIX}*"):
        leftover.unlink(missing_ok=True)


def parts(directory: Path) -> list[Path]:
    """The partition's data files, part-0 first."""
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := PART.fullmatch(p.name))]
    return [path for _, path in sorted(found)]


def write_partition(
    directory: Path,
    schema: pa.Schema,
    rows: Iterable[dict[str, Any]],
    *,
    batch_rows: int,
    file_rows: int,
) -> int:
    """Replace the Parquet files of one partition with `rows`; how many rows it holds now.

    Rows stream through in batches of `batch_rows` (one row group each), at most `file_rows` to a
    file (part-0, part-1, ...), so memory stays bounded on a busy day. The same rows in the same
    order give the same files. Every new file is complete and fsynced before the first rename;
    a crash among the renames can leave old and new files side by side until the next run
    rewrites the partition (its row count in the state is still the old one).
    """
    private_dir(directory)
    remove_temporaries(directory)
    written: list[tuple[Path, Path]] = []  # (tmp, final)
    total = 0
    try:
        batches = _batches(rows, batch_rows)
        batch = next(batches, None)
        while batch is not None:
            final = directory / f"part-{len(written)}.parquet"
            with _private_tmp(final) as (f, tmp), pq.ParquetWriter(f, schema) as writer:
                in_file = 0
                while batch is not None and in_file < file_rows:
                    # A batch never straddles two files: a file may hold up to a batch more.
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    in_file += len(batch)
                    batch = next(batches, None)
            written.append((tmp, final))
            total += in_file
    except BaseException:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in written:
        os.replace(tmp, final)
    for stale in parts(directory)[len(written) :]:
        stale.unlink()
    fsync_directory(directory)
    return total


def _batches(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def remove_partition(directory: Path) -> None:
    """A day the store no longer has rows for."""
    if not directory.is_dir():
        return
    remove_temporaries(directory)
    for part in parts(directory):
        part.unlink()
    with contextlib.suppress(OSError):  # something else lives there: leave the directory
        directory.rmdir()
