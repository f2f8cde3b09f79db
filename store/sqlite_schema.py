"""The SQLite backend's tables (``store.sqlite_store``), created on first open."""

# `seq` is an AUTOINCREMENT key: it never reuses a value, so it is a faithful insertion order
# across processes (writes are serialised by SQLite's write lock).
SCHEMA = """
CREATE TABLE IF NOT EXISTS learners (
    learner_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    turn_count INTEGER NOT NULL DEFAULT 0,
    last_turn_at REAL
);
CREATE TABLE IF NOT EXISTS answers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    learner_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    skill_id TEXT NOT NULL,
    correct INTEGER NOT NULL,
    ts REAL NOT NULL,
    UNIQUE (learner_id, source_id)
);
CREATE INDEX IF NOT EXISTS answers_by_learner ON answers (learner_id, ts, seq);
CREATE TABLE IF NOT EXISTS turns (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    turn_id TEXT NOT NULL UNIQUE,
    learner_id TEXT NOT NULL,
    ts REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS turns_by_learner ON turns (learner_id, ts, seq);
CREATE TABLE IF NOT EXISTS feedback (
    turn_id TEXT PRIMARY KEY,
    learner_id TEXT NOT NULL,
    reward REAL,
    item_id TEXT,
    skill_id TEXT,
    correct INTEGER,
    ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rewards (
    turn_id TEXT NOT NULL,
    source TEXT NOT NULL,
    learner_id TEXT NOT NULL,
    policy TEXT NOT NULL,
    strategy TEXT NOT NULL,
    reward REAL NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (turn_id, source)
);
CREATE INDEX IF NOT EXISTS rewards_by_learner ON rewards (learner_id, ts);
CREATE TABLE IF NOT EXISTS bandit (
    policy TEXT NOT NULL,
    arm TEXT NOT NULL,
    n INTEGER NOT NULL,
    reward_sum REAL NOT NULL,
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    PRIMARY KEY (policy, arm)
);
"""
