"""The outbox's journal: durable before it returns, adopted only from dead processes, replayed
without duplicates after a crash."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from store.outbox import Outbox

REPO_ROOT = Path(__file__).resolve().parents[2]
STORE_ID = "/tmp/test.db"


def _run(code: str, *, wait: bool = True) -> subprocess.Popen:
    """Python code in a process of its own (a replica that lives, or dies, beside the test)."""
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if wait:
        assert process.wait(timeout=60) == 0
    return process


def test_append_is_fsynced_before_it_returns(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    outbox = Outbox(tmp_path, store_id=STORE_ID)
    before = len(synced)
    outbox.append("turn", "t1", {"x": 1})
    assert len(synced) == before + 1
    assert b'"key": "t1"' in outbox.path.read_bytes()
    assert outbox.find("turn", "t1").data == {"x": 1}
    assert outbox.depth() == 1


def test_own_journal_is_emptied_once_everything_is_applied(tmp_path):
    outbox = Outbox(tmp_path, store_id=STORE_ID)
    first = outbox.append("turn", "t1", {})
    second = outbox.append("feedback", "t1", {})
    outbox.done(first)
    assert outbox.path.stat().st_size > 0 and outbox.depth() == 1
    outbox.done(second)
    assert outbox.path.stat().st_size == 0 and outbox.depth() == 0
    assert outbox.find("turn", "t1") is None
    outbox.append("turn", "t2", {})  # the journal goes on after being emptied
    assert [e.key for e in outbox.pending()] == ["t2"]


def test_a_dead_process_journal_is_adopted_in_order_and_deleted_when_applied(tmp_path):
    _run(f"""
        from store.outbox import Outbox
        outbox = Outbox({str(tmp_path)!r}, store_id={STORE_ID!r})
        done = outbox.append("turn", "t0", {{}})
        for key in ("t1", "t2"):
            outbox.append("turn", key, {{}})
        outbox.append("feedback", "t1", {{"reward": 1.0}})
        outbox.done(done)
        # exits without closing: the kernel releases the lock, the journal stays
    """)
    outbox = Outbox(tmp_path, store_id=STORE_ID)
    assert outbox.others_pending()
    assert outbox.adopt() == 3
    assert [(e.kind, e.key) for e in outbox.pending()] == [
        ("turn", "t1"),
        ("turn", "t2"),
        ("feedback", "t1"),
    ]
    assert outbox.find("feedback", "t1").data == {"reward": 1.0}
    assert outbox.adopt() == 0  # adopted once
    for entry in outbox.pending():
        outbox.done(entry)
    assert [p.name for p in tmp_path.iterdir()] == [outbox.path.name]
    assert not outbox.others_pending()


def test_a_live_process_journal_is_never_adopted(tmp_path):
    live = _run(
        f"""
        import sys
        from store.outbox import Outbox
        outbox = Outbox({str(tmp_path)!r}, store_id={STORE_ID!r})
        outbox.append("turn", "theirs", {{}})
        print("ready", flush=True)
        sys.stdin.readline()  # alive until the test says
        """,
        wait=False,
    )
    try:
        assert live.stdout.readline().strip() == "ready"
        outbox = Outbox(tmp_path, store_id=STORE_ID)
        assert outbox.adopt() == 0
        assert outbox.find("turn", "theirs") is None
        assert outbox.others_pending()  # a turn the store does not know may be there
    finally:
        live.communicate("\n", timeout=30)
    assert outbox.adopt() == 1  # its process is gone now
    assert outbox.find("turn", "theirs") is not None


def test_two_adopters_take_a_dead_journal_once(tmp_path):
    _run(f"""
        from store.outbox import Outbox
        Outbox({str(tmp_path)!r}, store_id={STORE_ID!r}).append("turn", "t1", {{}})
    """)
    first, second = Outbox(tmp_path, store_id=STORE_ID), Outbox(tmp_path, store_id=STORE_ID)
    assert first.adopt() == 1
    assert second.adopt() == 0  # locked by the first (a live process)
    first.done(first.pending()[0])
    assert second.adopt() == 0  # applied and deleted


def test_a_torn_last_line_is_skipped(tmp_path):
    _run(f"""
        from store.outbox import Outbox
        outbox = Outbox({str(tmp_path)!r}, store_id={STORE_ID!r})
        outbox.append("turn", "t1", {{}})
        outbox._own.file.write(b'{{"id": "x", "store": "cut in the mid')  # a crash mid-append
        outbox._own.file.flush()
    """)
    outbox = Outbox(tmp_path, store_id=STORE_ID)
    assert outbox.adopt() == 1
    assert [e.key for e in outbox.pending()] == ["t1"]


def test_another_store_journal_is_left_alone(tmp_path):
    _run(f"""
        from store.outbox import Outbox
        Outbox({str(tmp_path)!r}, store_id="mongodb-host/other").append("turn", "t1", {{}})
    """)
    outbox = Outbox(tmp_path, store_id=STORE_ID)
    assert outbox.adopt() == 0
    assert len(list(tmp_path.iterdir())) == 2


def test_append_that_cannot_reach_the_disk_raises(tmp_path, monkeypatch):
    outbox = Outbox(tmp_path, store_id=STORE_ID)

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        outbox.append("turn", "t1", {})
    assert outbox.depth() == 0  # nothing promised
