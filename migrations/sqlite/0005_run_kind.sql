-- A run either acts (`run`) or only shows what it would change (`plan`, from `runbook plan`).
ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'run';
