"""Export the store's turns, answers, feedback and rewards as Parquet, incrementally.

    python -m pipelines.export_store [--store sqlite:///var/tutor.db] [--out var/export]
        [--without-messages] [--full]

Writes ``OUT/<table>/day=YYYY-MM-DD/part-<n>.parquet`` for turns, answers, feedback and rewards
(hive-partitioned by the UTC day of each row's ts), ``OUT/bandit/<policy>.json`` (each policy's
arm statistics as the store holds them now) and ``OUT/_export_state.json`` (what the next run
compares with). Only days whose row count changed are rewritten, so a run with nothing new
writes nothing. Directories are 0700 and files 0600: messages are personal data;
``--without-messages`` leaves them (and the replies) out. The README's data card describes
every column. Exits 1 with a message when the export cannot run (e.g. OUT holds another
store's export).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from pipelines.common import REPO_ROOT, setup_logging
from pipelines.export import ExportError, ExportOptions, export, store_identity
from store import DEFAULT_STORE_URI, StoreError, open_store

log = logging.getLogger("pipelines.export_store")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store",
        default=os.environ.get("TUTOR_STORE_URI", DEFAULT_STORE_URI),
        help="store URI (default: $TUTOR_STORE_URI, else the embedded SQLite file)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "var" / "export",
        help="the export's directory (default: var/export in the repository)",
    )
    parser.add_argument(
        "--without-messages",
        action="store_true",
        help="leave turns' message and reply null (personal data); switching it on or off "
        "rewrites every turns partition",
    )
    parser.add_argument(
        "--full", action="store_true", help="rewrite every partition, whatever the state says"
    )
    parser.add_argument("--batch-rows", type=int, default=ExportOptions.batch_rows)
    parser.add_argument("--file-rows", type=int, default=ExportOptions.file_rows)
    args = parser.parse_args(argv)
    if args.batch_rows < 1 or args.file_rows < 1:
        parser.error("--batch-rows and --file-rows must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    setup_logging()
    options = ExportOptions(
        without_messages=args.without_messages,
        full=args.full,
        batch_rows=args.batch_rows,
        file_rows=args.file_rows,
    )
    started = time.perf_counter()
    try:
        with open_store(args.store) as store:
            summary = export(
                store, args.out.absolute(), source=store_identity(args.store), options=options
            )
    except (ExportError, StoreError) as exc:
        log.error("export failed: %s", exc)
        sys.exit(1)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
