-- A claim reads due parked runs in the order it takes them (`wake_at`, then `id`) and stops at its
-- LIMIT, instead of sorting every due run first: its cost no longer grows with the queue.
DROP INDEX runs_due;
CREATE INDEX runs_due ON runs (status, wake_at, id);
