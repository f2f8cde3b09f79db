"""A durable outbox: writes the store could not take, kept on local disk until it can.

Each process appends to a journal of its own (``<dir>/<host>-<pid>-<random>.jsonl``, one JSON
entry a line) and holds an exclusive ``flock`` on it for as long as it lives. ``append`` returns
only after the entry is fsynced, so a write acknowledged to a client survives the process, the
application and the machine's power (once the journal file's directory entry is synced too,
done when the journal is created). A journal whose lock can be taken belongs to a process that
is gone: ``adopt`` takes it over, and its entries are applied like the process's own.

Entries are applied in the order they were appended (a feedback after the turn it is about);
an applied entry is marked ``done`` (flushed, not fsynced: losing a marker only re-applies an
entry, and every apply is idempotent). A journal with nothing pending is truncated (its own) or
deleted (an adopted one). The journal names the store it is for, so one directory shared by two
applications never applies a write to the wrong store.

No threads or event loop here: the caller decides where the fsync and the store calls run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

logger = logging.getLogger(__name__)
SUFFIX = ".jsonl"


@dataclass
class Entry:
    """One write waiting for the store: ``kind`` (e.g. turn, feedback), ``key`` (the id it is
    idempotent by, e.g. the turn_id) and ``data`` (what applying it needs)."""

    entry_id: str
    kind: str
    key: str
    data: dict[str, Any]
    attempts: int = 0


@dataclass
class _Journal:
    path: Path
    file: BinaryIO
    own: bool
    pending: dict[str, Entry] = field(default_factory=dict)  # entry_id -> entry, in order


class Outbox:
    """The journals of one process: its own, and those it adopted from dead processes.

    Thread-safe: entries are appended from worker threads and marked done from the drain.
    """

    def __init__(self, directory: str | Path, *, store_id: str) -> None:
        self.directory = Path(directory)
        self.store_id = store_id
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        path = self.directory / name
        file = path.open("ab")
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # new file: never contended
        fsync_directory(self.directory)  # the journal's name survives a crash, not only its data
        self._own = _Journal(path, file, own=True)
        self._adopted: list[_Journal] = []
        self._index: dict[tuple[str, str], Entry] = {}

    @property
    def path(self) -> Path:
        return self._own.path

    # ---- writing ----------------------------------------------------------------------------

    def append(self, kind: str, key: str, data: dict[str, Any]) -> Entry:
        """Journal one write; returns once it is on disk (fsync). Raises OSError when it is not
        (disk full, directory gone): then nothing was acknowledged."""
        entry = Entry(uuid.uuid4().hex, kind, key, data)
        line = {"id": entry.entry_id, "store": self.store_id, "kind": kind, "key": key}
        payload = (json.dumps({**line, "data": data}) + "\n").encode()
        with self._lock:
            journal = self._own
            try:
                journal.file.write(payload)
                journal.file.flush()
                os.fsync(journal.file.fileno())
            except OSError:
                # A partial line may be on disk: the reader skips lines it cannot parse.
                logger.exception("outbox: could not journal a %s", kind)
                raise
            journal.pending[entry.entry_id] = entry
            self._index[(kind, key)] = entry
        return entry

    def done(self, entry: Entry) -> None:
        """The entry is in the store: forget it, and compact its journal once it is empty."""
        with self._lock:
            journal = next((j for j in self._journals() if entry.entry_id in j.pending), None)
            if journal is None:
                return
            del journal.pending[entry.entry_id]
            if self._index.get((entry.kind, entry.key)) is entry:
                del self._index[(entry.kind, entry.key)]
            if journal.pending:
                with contextlib.suppress(OSError):  # the worst case is one more idempotent apply
                    journal.file.write((json.dumps({"done": entry.entry_id}) + "\n").encode())
                    journal.file.flush()
                return
            if journal.own:
                journal.file.truncate(0)  # opened for appending: the next entry starts at 0
                with contextlib.suppress(OSError):
                    os.fsync(journal.file.fileno())
            else:
                journal.path.unlink(missing_ok=True)
                journal.file.close()  # releases the lock, after the name is gone
                self._adopted.remove(journal)
                logger.info("outbox: adopted journal %s fully applied", journal.path.name)

    # ---- reading ----------------------------------------------------------------------------

    def pending(self) -> list[Entry]:
        """Every entry not yet applied: adopted journals first (older), then this process's,
        each in the order appended."""
        with self._lock:
            return [e for j in self._journals() for e in j.pending.values()]

    def find(self, kind: str, key: str) -> Entry | None:
        """The pending entry of ``kind`` for ``key`` (e.g. a turn by its turn_id), if any."""
        with self._lock:
            return self._index.get((kind, key))

    def depth(self) -> int:
        with self._lock:
            return sum(len(j.pending) for j in self._journals())

    def others_pending(self) -> bool:
        """Whether another journal in the directory holds anything: another live process's
        (which this one cannot read while it lives) or a dead one's not yet adopted."""
        mine = {j.path for j in self._journals()}
        for path in self.directory.glob(f"*{SUFFIX}"):
            if path in mine:
                continue
            with contextlib.suppress(OSError):
                if path.stat().st_size > 0:
                    return True
        return False

    # ---- adopting the journals of dead processes --------------------------------------------

    def adopt(self) -> int:
        """Take over every journal in the directory whose process is gone; how many entries
        that added. A journal of a live process is locked and left alone."""
        added = 0
        with self._lock:
            mine = {j.path for j in self._journals()}
            for path in sorted(self.directory.glob(f"*{SUFFIX}")):
                if path not in mine:
                    added += self._adopt_one(path)
        return added

    def _adopt_one(self, path: Path) -> int:
        try:
            file = path.open("r+b")
        except FileNotFoundError:
            return 0  # adopted and emptied by another process meanwhile
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()  # its process is alive (or another one is adopting it)
            return 0
        # Another process may have emptied and deleted it between our open and our lock.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(file.fileno()).st_ino:
                journal = _Journal(path, file, own=False)
                entries = list(_read(file, path, self.store_id))
                if any(e is None for e in entries):
                    file.close()  # another store's journal: not ours to apply
                    return 0
                for entry in entries:
                    journal.pending[entry.entry_id] = entry
                    self._index.setdefault((entry.kind, entry.key), entry)
                if not journal.pending:
                    path.unlink(missing_ok=True)
                    file.close()
                    return 0
                file.seek(0, os.SEEK_END)
                self._adopted.append(journal)
                logger.warning(
                    "outbox: adopted %d pending writes from %s", len(journal.pending), path.name
                )
                return len(journal.pending)
        file.close()
        return 0

    def close(self) -> None:
        """Release the journals (their entries stay on disk for whoever adopts them)."""
        with self._lock:
            for journal in self._journals():
                with contextlib.suppress(OSError):
                    journal.file.close()
            self._adopted = []

    def _journals(self) -> list[_Journal]:
        return [*self._adopted, self._own]


def _read(file: BinaryIO, path: Path, store_id: str) -> Iterator[Entry | None]:
    """The entries of a journal not marked done; None for an entry of another store."""
    entries: dict[str, Entry] = {}
    file.seek(0)
    for number, raw in enumerate(file.read().splitlines(), start=1):
        try:
            line = json.loads(raw)
        except ValueError:
            # A line torn by a crash mid-append was never acknowledged (append had not returned).
            logger.warning("outbox: %s line %d is not JSON: skipped", path.name, number)
            continue
        if "done" in line:
            entries.pop(line["done"], None)
            continue
        if line.get("store") != store_id:
            logger.warning("outbox: %s is for another store: left alone", path.name)
            yield None
            return
        entry = Entry(line["id"], line["kind"], line["key"], line["data"])
        entries[entry.entry_id] = entry
    yield from entries.values()


def fsync_directory(directory: Path) -> None:
    """Make the entries of `directory` durable: a created or renamed file's name lives there."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
