//! Queries behind starting runs idempotently and serving them over HTTP: the runs an alert key
//! started, the run an Idempotency-Key created, a run's events a page at a time, runs by status.

/// Statuses of a run that has not ended: the ones `runs_one_active_per_trigger` (migration 0007)
/// allows once per runbook and alert key.
macro_rules! unfinished {
    () => {
        "('running', 'parked', 'waiting', 'interrupted')"
    };
}

/// The unfinished run of runbook `$1` for alert key `$2`.
pub(crate) const ACTIVE_FOR_TRIGGER: &str = concat!(
    "SELECT id FROM runs WHERE runbook = $1 AND trigger_key = $2 AND status IN ",
    unfinished!(),
    " ORDER BY started_at DESC LIMIT 1"
);

/// The run of runbook `$1` for alert key `$2` that ended last, and when.
pub(crate) const LAST_ENDED_FOR_TRIGGER: &str = "SELECT id, finished_at FROM runs
     WHERE runbook = $1 AND trigger_key = $2 AND finished_at IS NOT NULL
     ORDER BY finished_at DESC LIMIT 1";

pub(crate) const BY_REQUEST_KEY: &str = "SELECT id FROM runs WHERE request_key = $1";

/// Events of run `$1` after sequence number `$2`, at most `$3`.
pub(crate) const EVENTS_AFTER: &str =
    "SELECT run_id, seq, at, actor, kind, step_id, data, prev_hash, hash
     FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";

/// Runs, newest first, filtered by status `$1`, runbook `$2` and started before `$3` when given;
/// at most `$4`.
/// (Parameters appear in the order of their numbers: SQLite numbers `$N` by first appearance.)
pub(crate) const RUNS_WHERE: &str = "SELECT * FROM runs
     WHERE (CAST($1 AS TEXT) IS NULL OR status = $1)
       AND (CAST($2 AS TEXT) IS NULL OR runbook = $2)
       AND (CAST($3 AS BIGINT) IS NULL OR started_at < $3
            OR (started_at = $3 AND CAST($4 AS TEXT) IS NOT NULL AND id < $4))
     ORDER BY started_at DESC, id DESC LIMIT $5";

/// Runs of kind `run` by status.
pub(crate) const COUNT_BY_STATUS: &str =
    "SELECT status, COUNT(*) FROM runs WHERE kind = 'run' GROUP BY status ORDER BY status";

/// What an alert key has started so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriggerRuns {
    /// Its unfinished run (at most one).
    pub active: Option<String>,
    /// The run that ended last, and when (epoch ms).
    pub last_ended: Option<(String, i64)>,
}
