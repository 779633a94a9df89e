-- One logical schema for SQLite and PostgreSQL; timestamps are epoch milliseconds.

CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    runbook         TEXT NOT NULL,
    title           TEXT,
    source_path     TEXT,
    runbook_sha256  TEXT NOT NULL,
    runbook_text    TEXT NOT NULL,
    params          TEXT NOT NULL,
    status          TEXT NOT NULL,
    actor           TEXT NOT NULL,
    started_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    parent_run      TEXT
);

CREATE INDEX runs_by_start ON runs (started_at DESC);

-- Append-only and hash-chained: each event's hash covers the previous one's.
CREATE TABLE events (
    run_id     TEXT NOT NULL REFERENCES runs (id),
    seq        BIGINT NOT NULL,
    at         BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    kind       TEXT NOT NULL,
    step_id    TEXT,
    data       TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TRIGGER events_append_only BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
