"""make export: the Parquet layout the research jobs read, incremental and idempotent runs, and
the personal data (owner-only files, --without-messages, nothing in the logs)."""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from pipelines import export_store
from pipelines.export import ExportError, ExportOptions, export, files, store_identity
from store import AnswerRecord, FeedbackRecord, TutorStore
from store.mongo_store import MongoStore
from store.sqlite_store import SQLiteStore
from tests.store.test_contract import make_answer, make_reward, make_turn

DAY = 86400.0
D0 = 20_000 * DAY  # 2024-10-04 00:00 UTC
MESSAGE = "my teacher Ms Example says I am bad at fractions"  # stands for personal data

# The layout contract the research jobs rely on (helper brief of issue 17), written out here
# apart from pipelines/export/schema.py so a change there must be a change here too.
CONTRACT = {
    "turns": {
        "turn_id": pa.string(), "learner_id": pa.string(), "session_id": pa.string(),
        "ts": pa.float64(), "request_id": pa.string(), "message": pa.string(),
        "reply": pa.string(), "emotion_state": pa.string(), "emotion_confidence": pa.float64(),
        "emotion_json": pa.string(), "difficulty_json": pa.string(), "strategy": pa.string(),
        "propensity": pa.float64(), "context": pa.list_(pa.float64()), "provider": pa.string(),
        "model": pa.string(), "version_emotion": pa.string(), "version_difficulty": pa.string(),
        "version_personalization": pa.string(), "version_llm_router": pa.string(),
        "model_versions_json": pa.string(), "timings_ms_json": pa.string(),
        "degraded": pa.list_(pa.string()),
    },
    "answers": {
        "learner_id": pa.string(), "source_id": pa.string(), "turn_id": pa.string(),
        "item_id": pa.string(), "skill_id": pa.string(), "correct": pa.bool_(),
        "ts": pa.float64(),
    },
    "feedback": {
        "turn_id": pa.string(), "learner_id": pa.string(), "reward": pa.float64(),
        "item_id": pa.string(), "skill_id": pa.string(), "correct": pa.bool_(),
        "ts": pa.float64(),
    },
    "rewards": {
        "turn_id": pa.string(), "learner_id": pa.string(), "source": pa.string(),
        "policy": pa.string(), "strategy": pa.string(), "reward": pa.float64(),
        "ts": pa.float64(),
    },
}  # fmt: skip


@pytest.fixture(params=["sqlite", "mongomock"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TutorStore]:
    """Both backends, for what the export reads from the store."""
    if request.param == "sqlite":
        with SQLiteStore(tmp_path / "tutor.db") as sqlite:
            yield sqlite
        return
    import mongomock

    client = mongomock.MongoClient()
    with MongoStore(client=client) as mongo:
        yield mongo


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[TutorStore]:
    """One backend, for what the export does with the files (the same whatever the store)."""
    with SQLiteStore(tmp_path / "tutor.db") as store:
        yield store


def add_turn(store: TutorStore, turn_id: str, ts: float, **overrides) -> None:
    fields = {
        "message": MESSAGE,
        "emotion": {"state": "confused", "confidence": 0.75, "states": {"confused": 0.75}},
        "model_versions": {"emotion": "v1", "difficulty": "v2", "personalization": "p1"},
        **overrides,
    }
    store.save_turn(make_turn(turn_id, ts=ts, **fields))
    store.add_answer(make_answer(f"{turn_id}:answer", ts, correct=turn_id.endswith("0")))
    store.add_reward(make_reward(turn_id, ts=ts, policy="p1"), context=[1.0, 0.5])
    store.add_feedback(FeedbackRecord(turn_id=turn_id, learner_id="L1", reward=0.5, ts=ts))


def fill(store: TutorStore) -> None:
    """Three UTC days of rows, the last turn a hair before midnight."""
    for i, ts in enumerate([D0 + 10, D0 + 20, D0 + DAY + 5, D0 + 2 * DAY + 1, D0 + 3 * DAY - 1e-3]):
        add_turn(store, f"T{i}", ts)


def run(store: TutorStore, out: Path, **options) -> dict:
    return export(store, out, source="test-store", options=ExportOptions(**options))


def read(out: Path, table: str) -> pa.Table:
    return pads.dataset(out / table, format="parquet", partitioning="hive").to_table()


def snapshot(out: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under `out` (but the lock): (inode, mtime_ns, bytes); a rewrite changes the
    inode (a rename), a write in place the mtime."""
    return {
        str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "_export.lock"
    }


def contents(out: Path) -> dict[str, bytes]:
    return {name: data for name, (_, _, data) in snapshot(out).items()}


# ---- the layout ------------------------------------------------------------------------------


def test_the_layout_and_schema_follow_the_contract(store: TutorStore, tmp_path: Path) -> None:
    fill(store)
    store.add_answer(make_answer("quiz-7", D0 + 30))  # an answer no turn carried
    store.save_turn(make_turn("T9", ts=D0 + 40, difficulty={}, model_versions={}))
    summary = run(store, tmp_path / "out")

    days = ["2024-10-04", "2024-10-05", "2024-10-06"]
    for table, columns in CONTRACT.items():
        assert sorted(p.name for p in (tmp_path / "out" / table).iterdir()) == [
            f"day={day}" for day in days
        ]
        assert (tmp_path / "out" / table / "day=2024-10-04" / "part-0.parquet").is_file()
        data = read(tmp_path / "out", table)
        assert dict(zip(data.schema.names, data.schema.types, strict=True)) == {
            **columns,
            "day": pa.string(),  # the hive partition
        }
    assert summary["tables"]["turns"]["rows"] == 6
    turns = read(tmp_path / "out", "turns").to_pylist()
    assert [t["turn_id"] for t in turns] == ["T0", "T1", "T9", "T2", "T3", "T4"]  # by ts per day
    assert turns[-1]["day"] == "2024-10-06"  # 1 ms before midnight: the day before
    first = turns[0]
    assert first["message"] == MESSAGE and first["reply"].startswith("Let's")
    assert (first["emotion_state"], first["emotion_confidence"]) == ("confused", 0.75)
    assert json.loads(first["emotion_json"])["states"] == {"confused": 0.75}
    assert json.loads(first["difficulty_json"]) == {"level": 2, "probability": 0.61}
    assert (first["version_personalization"], first["version_llm_router"]) == ("p1", None)
    assert json.loads(first["model_versions_json"])["difficulty"] == "v2"
    assert first["context"] == [1.0, 0.5, -0.25] and first["degraded"] == []
    bare = turns[2]
    assert bare["difficulty_json"] is None and bare["version_emotion"] is None
    answers = {a["source_id"]: a for a in read(tmp_path / "out", "answers").to_pylist()}
    assert answers["T0:answer"]["turn_id"] == "T0" and answers["T0:answer"]["correct"] is True
    assert answers["quiz-7"]["turn_id"] is None
    rewards = read(tmp_path / "out", "rewards").to_pylist()
    assert {(r["turn_id"], r["source"], r["policy"]) for r in rewards} >= {("T0", "answer", "p1")}
    stats = json.loads((tmp_path / "out" / "bandit" / "p1.json").read_text())
    assert stats["hint"]["n"] == 5 and stats["hint"]["b"] == pytest.approx([5.0, 2.5], abs=1e-12)


def test_a_day_splits_into_parts_and_reads_back_in_order(sqlite: TutorStore, tmp_path: Path):
    for i in range(7):
        sqlite.add_answer(make_answer(f"s{i}", D0 + 100 - i))  # stored newest first
    run(sqlite, tmp_path / "out", batch_rows=2, file_rows=3)
    partition = tmp_path / "out" / "answers" / "day=2024-10-04"
    assert [p.name for p in files.parts(partition)] == ["part-0.parquet", "part-1.parquet"]
    assert read(tmp_path / "out", "answers").column("source_id").to_pylist() == [
        f"s{i}" for i in reversed(range(7))
    ]
    # Fewer parts later (the default file size): the surplus part goes.
    run(sqlite, tmp_path / "out", full=True)
    assert [p.name for p in files.parts(partition)] == ["part-0.parquet"]


# ---- incremental and idempotent ----------------------------------------------------------------


def test_a_second_run_writes_nothing(store: TutorStore, tmp_path: Path) -> None:
    fill(store)
    out = tmp_path / "out"
    run(store, out)
    before = snapshot(out)
    summary = run(store, out)
    assert snapshot(out) == before
    assert all(t["rows_written"] == 0 for t in summary["tables"].values())
    assert summary["bandit_written"] == []


def test_a_late_row_with_an_old_ts_rewrites_just_its_day(store: TutorStore, tmp_path: Path):
    fill(store)
    out = tmp_path / "out"
    run(store, out)
    before = snapshot(out)
    # Replayed from an outbox a day later, with the ts of when the learner sent it.
    store.save_turn(make_turn("late", ts=D0 + DAY + 1))
    store.add_feedback(FeedbackRecord(turn_id="late", learner_id="L1", reward=1.0, ts=D0 + 15))
    summary = run(store, out)

    assert summary["tables"]["turns"]["days_written"] == ["2024-10-05"]
    assert summary["tables"]["feedback"]["days_written"] == ["2024-10-04"]
    assert summary["tables"]["answers"]["days_written"] == []
    after = snapshot(out)
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {
        "turns/day=2024-10-05/part-0.parquet",
        "feedback/day=2024-10-04/part-0.parquet",
        "_export_state.json",
    }
    assert read(out, "turns").column("turn_id").to_pylist() == [
        "T0",
        "T1",
        "late",
        "T2",
        "T3",
        "T4",
    ]
    assert read(out, "feedback").column("turn_id").to_pylist()[:3] == ["T0", "late", "T1"]


def test_new_statistics_rewrite_the_bandit_file(sqlite: TutorStore, tmp_path: Path) -> None:
    fill(sqlite)
    run(sqlite, tmp_path / "out")
    sqlite.add_reward(make_reward("T0", "explicit", policy="p1", ts=D0 + 11), context=[1.0, 0.0])
    assert run(sqlite, tmp_path / "out")["bandit_written"] == ["p1"]
    stats = json.loads((tmp_path / "out" / "bandit" / "p1.json").read_text())
    assert stats["hint"]["n"] == 6


class Crash(Exception):
    pass


@pytest.mark.parametrize("when", ["partition", "rename"])
def test_a_rerun_after_a_crash_converges(
    store: TutorStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    fill(store)
    reference = tmp_path / "reference"
    run(store, reference, batch_rows=1, file_rows=1)
    out = tmp_path / "out"
    run(store, out, batch_rows=1, file_rows=1)
    add_turn(store, "T7", D0 + 5)  # first of the first day, in every table
    run(store, reference, batch_rows=1, file_rows=1)

    real_write, real_replace = files.write_partition, files.os.replace
    calls = {"n": 0}

    def crash_on_the_third_partition(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Crash
        return real_write(*args, **kwargs)

    def crash_between_renames(src, dst):
        calls["n"] += 1
        if calls["n"] == 2 and str(dst).endswith(".parquet"):
            raise Crash  # part-0 is new (T7), part-1 still old (T1), part-2 missing
        return real_replace(src, dst)

    if when == "partition":
        monkeypatch.setattr("pipelines.export.run.write_partition", crash_on_the_third_partition)
    else:
        monkeypatch.setattr(files.os, "replace", crash_between_renames)
    with pytest.raises(Crash):
        run(store, out, batch_rows=1, file_rows=1)
    monkeypatch.undo()
    assert contents(out) != contents(reference)  # the crash left something to repair
    run(store, out, batch_rows=1, file_rows=1)
    assert contents(out) == contents(reference)  # byte for byte, no temporary file left


# ---- the state and the directory -----------------------------------------------------------------


def test_a_deleted_partition_is_written_again(sqlite: TutorStore, tmp_path: Path) -> None:
    fill(sqlite)
    run(sqlite, tmp_path / "out")
    for part in (tmp_path / "out" / "rewards" / "day=2024-10-05").iterdir():
        part.unlink()
    assert run(sqlite, tmp_path / "out")["tables"]["rewards"]["days_written"] == ["2024-10-05"]


def test_a_damaged_state_is_refused_until_full(sqlite: TutorStore, tmp_path: Path) -> None:
    fill(sqlite)
    run(sqlite, tmp_path / "out")
    reference = contents(tmp_path / "out")
    (tmp_path / "out" / "_export_state.json").write_text("{")
    with pytest.raises(ExportError, match="--full"):
        run(sqlite, tmp_path / "out")
    run(sqlite, tmp_path / "out", full=True)
    assert contents(tmp_path / "out") == reference


def test_another_stores_export_or_a_foreign_directory_is_refused(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "a.db") as store:
        fill(store)
        export(store, tmp_path / "out", source="store-a")
        with pytest.raises(ExportError, match="holds rows of store-a, not of store-b"):
            export(store, tmp_path / "out", source="store-b")
        export(store, tmp_path / "out", source="store-b", options=ExportOptions(full=True))
        (tmp_path / "notes").mkdir()
        (tmp_path / "notes" / "thesis.tex").write_text("mine")
        with pytest.raises(ExportError, match="not an export this command wrote"):
            export(store, tmp_path / "notes", source="store-a")
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "mine"


def test_the_store_identity_keeps_no_credentials(tmp_path: Path) -> None:
    assert store_identity("mongodb://ana:s3cret@db1:27017,db2/tutor?authSource=admin") == (
        "mongodb://db1:27017,db2/tutor"
    )
    relative = store_identity("sqlite:///var/tutor.db")
    assert relative.startswith("sqlite:////") and relative.endswith("/var/tutor.db")


# ---- personal data -------------------------------------------------------------------------------


def test_files_are_owner_only(sqlite: TutorStore, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir(mode=0o755)
    out.chmod(0o755)  # made wider than the export wants, before its first run
    fill(sqlite)
    run(sqlite, out)
    for path in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_without_messages_leaves_them_out(sqlite: TutorStore, tmp_path: Path) -> None:
    fill(sqlite)
    out = tmp_path / "out"
    run(sqlite, out)
    summary = run(sqlite, out, without_messages=True)  # switching it rewrites every turns day
    assert len(summary["tables"]["turns"]["days_written"]) == 3
    assert summary["tables"]["answers"]["days_written"] == []
    turns = read(out, "turns")
    assert turns.column("message").null_count == turns.column("reply").null_count == 5
    assert not any(MESSAGE.encode() in data for data in contents(out).values())
    assert run(sqlite, out, without_messages=True)["tables"]["turns"]["rows_written"] == 0
    run(sqlite, out)  # and back
    assert read(out, "turns").column("message").to_pylist() == [MESSAGE] * 5


def test_the_command_logs_counts_never_messages(tmp_path: Path, caplog, capsys) -> None:
    with SQLiteStore(tmp_path / "tutor.db") as store:
        fill(store)
    uri = f"sqlite:///{tmp_path / 'tutor.db'}"
    with caplog.at_level(logging.DEBUG):
        summary = export_store.main(["--store", uri, "--out", str(tmp_path / "out")])
    assert summary["tables"]["turns"]["rows_written"] == 5
    printed = capsys.readouterr().out
    assert json.loads(printed)["tables"]["feedback"]["days"] == 3
    assert "turns: 3 of 3 days rewritten (5 rows of 5)" in caplog.text
    assert MESSAGE not in caplog.text + printed
    with pytest.raises(SystemExit) as exited:  # another store into the same directory
        export_store.main(
            ["--store", f"sqlite:///{tmp_path / 'b.db'}", "--out", str(tmp_path / "out")]
        )
    assert exited.value.code == 1


def test_answers_from_feedback_keep_their_turn_id_null(tmp_path: Path) -> None:
    """Only "<T>:answer" names the turn that carried the answer (the contract's turn_id)."""
    with SQLiteStore(tmp_path / "tutor.db") as store:
        store.add_answer(
            AnswerRecord(
                learner_id="L", source_id="T1:feedback", item_id="i", skill_id="s",
                correct=False, ts=D0,
            )
        )  # fmt: skip
        run(store, tmp_path / "out")
    assert read(tmp_path / "out", "answers").column("turn_id").to_pylist() == [None]
