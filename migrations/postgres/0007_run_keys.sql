-- Keys that make starting a run idempotent. `trigger_key`: the alert a webhook run answers (group key
-- and mapped params); at most one unfinished run per (runbook, trigger_key), enforced here so two
-- servers sharing the database cannot both start one. `request_key`: an API client's Idempotency-Key
-- (prefixed with the token's subject); a retried request finds the run the first one created.
ALTER TABLE runs ADD COLUMN trigger_key TEXT;
ALTER TABLE runs ADD COLUMN request_key TEXT;
CREATE UNIQUE INDEX runs_one_active_per_trigger ON runs (runbook, trigger_key)
    WHERE trigger_key IS NOT NULL AND status IN ('running', 'parked', 'waiting', 'interrupted');
CREATE INDEX runs_by_trigger ON runs (runbook, trigger_key, finished_at) WHERE trigger_key IS NOT NULL;
CREATE UNIQUE INDEX runs_by_request_key ON runs (request_key) WHERE request_key IS NOT NULL;
