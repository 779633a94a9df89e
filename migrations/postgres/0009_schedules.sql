-- The last fire of each `triggers.schedule`, by runbook and expression as written (epoch ms). A
-- server starts a scheduled run by moving `last_fire` from the value it read to the fire's instant
-- (compare-and-set) in the same transaction that creates the run, so servers sharing the database
-- start one run per fire, and a crash leaves either both or neither. `last_run` is the run the
-- last fire started (none for a first sighting, or when the run could not be created: then
-- `last_error` says why).
CREATE TABLE schedules (
    runbook TEXT NOT NULL,
    expression TEXT NOT NULL,
    last_fire BIGINT NOT NULL,
    last_run TEXT,
    last_error TEXT,
    PRIMARY KEY (runbook, expression)
);
