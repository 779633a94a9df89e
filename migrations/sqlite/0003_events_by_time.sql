-- `runbook audit export --since` reads events across runs by time.
CREATE INDEX events_by_at ON events (at, run_id, seq);
