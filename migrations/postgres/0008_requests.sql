-- Requests to a run from any process (`runbook cancel`, the HTTP API, the Alertmanager webhook):
-- cancel requests and notes. The driver that holds the run journals each one once (the journaled
-- event names the request's id, so a resumed run does not journal it again); recording one makes a
-- parked run due at once, so a worker picks it up. `id` is a UUIDv7; `body` is JSON: a cancel's
-- reason and conditions, or a note.
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
