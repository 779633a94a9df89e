-- A run is driven by one process at a time: whoever holds an unexpired lease.
CREATE TABLE leases (
    run_id      TEXT PRIMARY KEY REFERENCES runs (id),
    holder      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
