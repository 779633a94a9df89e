-- Answers to approval requests, from any process (`runbook approve`, the HTTP API). The driver that
-- holds the run journals them; the first answer to a request wins.
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
