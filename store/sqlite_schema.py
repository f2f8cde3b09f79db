"""The SQLite backend's tables (``store.sqlite_store``), created on first open.

Every statement is IF NOT EXISTS and runs on every open, so a database written by an older
version gains the tables and indexes added since (e.g. the lifecycle ones) without a migration.
"""

from store.sqlite_keys import KEYS_SCHEMA
from store.sqlite_risk import RISK_SCHEMA

# Comments inside SCHEMA must not contain semicolons: the store splits it on them.
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
-- Reads by time across learners (online metrics since a date, exports): (ts, seq) is both
-- the filter and the order, so a page is an index range scan, never a sort.
CREATE INDEX IF NOT EXISTS turns_by_ts ON turns (ts, seq);
CREATE INDEX IF NOT EXISTS answers_by_ts ON answers (ts, seq);
-- rewards and feedback have no seq column: the implicit rowid is in every index and breaks ties.
CREATE INDEX IF NOT EXISTS rewards_by_ts ON rewards (ts);
CREATE INDEX IF NOT EXISTS feedback_by_ts ON feedback (ts);
CREATE TABLE IF NOT EXISTS rollout_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    action TEXT NOT NULL,
    from_version TEXT,
    to_version TEXT,
    percent REAL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rollout_events_by_model ON rollout_events (model, ts, seq);
CREATE INDEX IF NOT EXISTS rollout_events_by_ts ON rollout_events (ts, seq);
CREATE TABLE IF NOT EXISTS shadow_outputs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    turn_id TEXT NOT NULL,
    learner_id TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    served_version TEXT NOT NULL,
    output TEXT NOT NULL,
    ts REAL NOT NULL,
    UNIQUE (turn_id, model, version)
);
CREATE INDEX IF NOT EXISTS shadow_outputs_by_model ON shadow_outputs (model, ts, seq);
CREATE TABLE IF NOT EXISTS serving_stats (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    replica TEXT NOT NULL,
    window_start REAL NOT NULL,
    window_end REAL NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    latency_counts TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS serving_stats_by_model ON serving_stats (model, window_end, seq);
"""
SCHEMA += KEYS_SCHEMA
SCHEMA += RISK_SCHEMA
