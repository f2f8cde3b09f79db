"""``OUT/_export_state.json``: what the last export wrote, so the next one writes only changes.

Per table and UTC day, the number of rows its partition holds. Rows in the store are never
changed or deleted, so a day whose store count equals the recorded count needs no rewrite; a
row replayed late from an outbox keeps its original ts and raises its own day's count, which
a ts watermark would miss. The state also records what the files depend on besides the rows
(the export's format, whether messages were left out, which store), and a change of any of
them rewrites every partition it touches.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field

from pipelines.export.files import write_bytes_if_changed
from store.base import EXPORT_TABLES
from store.factory import sqlite_path

STATE_NAME = "_export_state.json"
LOCK_NAME = "_export.lock"  # held while a run writes: two runs on one OUT would interleave


class ExportError(RuntimeError):
    """The export cannot run as asked (the message says why and what to do)."""


class ExportState(BaseModel):
    format: int
    store: str  # store_identity of the store the rows came from
    without_messages: bool
    # table -> {"YYYY-MM-DD": rows in that day's partition}
    days: dict[str, dict[str, int]] = Field(default_factory=dict)

    @classmethod
    def load(cls, out: Path) -> ExportState | None:
        path = out / STATE_NAME
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise ExportError(
                f"{path} is not an export state ({exc}); rerun with --full to rewrite the export"
            ) from exc

    def save(self, out: Path) -> bool:
        """Atomically, and only when it changed (so a run that found nothing writes nothing)."""
        data = json.dumps(self.model_dump(), indent=1, sort_keys=True) + "\n"
        return write_bytes_if_changed(out / STATE_NAME, data.encode())

    def table(self, table: str) -> dict[str, int]:
        return self.days.setdefault(table, {})


def store_identity(uri: str) -> str:
    """The store a URI names, without credentials: a SQLite file by its absolute path, a MongoDB
    database by scheme, hosts and path (no user, password or options)."""
    if uri.startswith("sqlite:"):
        return f"sqlite:///{sqlite_path(uri).resolve()}"
    parts = urlsplit(uri)
    hosts = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, hosts, parts.path, "", ""))


# What may sit in an OUT that holds no state yet: a first run that stopped before saving it.
_OWN_NAMES = {*EXPORT_TABLES, "bandit", STATE_NAME, LOCK_NAME}
# This command's output before the Parquet layout: turns.jsonl and bandit_<policy>.json.
_LEGACY = re.compile(r"turns\.jsonl|bandit_[^/]+\.json")


def check_out_dir(out: Path) -> None:
    """Refuse to take over a directory some other program wrote (it would be made owner-only
    and its part files replaced); remove this command's former JSON Lines output."""
    if not out.is_dir() or (out / STATE_NAME).is_file():
        return
    for legacy in out.iterdir():
        if _LEGACY.fullmatch(legacy.name) and legacy.is_file():
            legacy.unlink()
    foreign = sorted(p.name for p in out.iterdir() if p.name not in _OWN_NAMES)
    if foreign:
        raise ExportError(
            f"{out} is not empty and holds no {STATE_NAME} ({', '.join(foreign[:5])}): "
            "not an export this command wrote; give a new or empty directory"
        )
