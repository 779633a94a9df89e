-- Workers claim runs that are due: parked runs whose journaled wake-up has come (`wake_at`, epoch
-- milliseconds; NULL while a run waits only for an approval answer) and running runs whose driver's
-- lease expired. `concurrency` is the runbook's `concurrency:` when the run was created: workers
-- never drive more runs of one runbook at once.
ALTER TABLE runs ADD COLUMN wake_at BIGINT;
ALTER TABLE runs ADD COLUMN concurrency BIGINT;
CREATE INDEX runs_due ON runs (status, wake_at);
CREATE INDEX runs_by_runbook ON runs (runbook);
