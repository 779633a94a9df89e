-- The schema that migrations/sqlite/ make, as SQLite records it: a new database is made from
-- it in one pass (engine/src/store/sqlite.rs). Written by a test; after adding a migration:
-- UPDATE_GOLDEN=1 cargo nextest run -p runbook-engine baseline

CREATE TABLE _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
);

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
, kind TEXT NOT NULL DEFAULT 'run', wake_at BIGINT, concurrency BIGINT, trigger_key TEXT, request_key TEXT);

CREATE INDEX runs_by_start ON runs (started_at DESC);

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

CREATE TABLE leases (
    run_id      TEXT PRIMARY KEY REFERENCES runs (id),
    holder      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE INDEX events_by_at ON events (at, run_id, seq);

CREATE TABLE approval_answers (
    run_id      TEXT NOT NULL REFERENCES runs (id),
    step_id     TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    approve     BOOLEAN NOT NULL,
    answered_by TEXT NOT NULL,
    how         TEXT NOT NULL,
    comment     TEXT,
    at          BIGINT NOT NULL,
    PRIMARY KEY (run_id, step_id, attempt)
);

CREATE INDEX runs_by_runbook ON runs (runbook);

CREATE UNIQUE INDEX runs_one_active_per_trigger ON runs (runbook, trigger_key)
    WHERE trigger_key IS NOT NULL AND status IN ('running', 'parked', 'waiting', 'interrupted');

CREATE INDEX runs_by_trigger ON runs (runbook, trigger_key, finished_at) WHERE trigger_key IS NOT NULL;

CREATE UNIQUE INDEX runs_by_request_key ON runs (request_key) WHERE request_key IS NOT NULL;

CREATE TABLE run_requests (
    run_id       TEXT NOT NULL REFERENCES runs (id),
    id           TEXT NOT NULL,
    kind         TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    how          TEXT NOT NULL,
    body         TEXT NOT NULL,
    at           BIGINT NOT NULL,
    PRIMARY KEY (run_id, id)
);

CREATE TABLE schedules (
    runbook TEXT NOT NULL,
    expression TEXT NOT NULL,
    last_fire BIGINT NOT NULL,
    last_run TEXT,
    last_error TEXT,
    PRIMARY KEY (runbook, expression)
);

CREATE INDEX runs_due ON runs (status, wake_at, id);
