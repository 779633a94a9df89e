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

-- Event data is TEXT, not JSONB: the hash chain covers the exact bytes stored.
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

CREATE FUNCTION events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER events_append_only BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
