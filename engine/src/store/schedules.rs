//! The last fire of each schedule (migration 0009), moved by compare-and-set so that servers
//! sharing one database start one run per fire.

/// A schedule's record: its last fire and what that fire did.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct ScheduleRow {
    pub runbook: String,
    pub expression: String,
    /// Epoch ms: the last fire, or when the schedule was first seen.
    pub last_fire: i64,
    /// The run the last fire started.
    pub last_run: Option<String>,
    /// Why the last fire started no run.
    pub last_error: Option<String>,
}

/// A fire to record: the schedule moves from `previous` (what the caller read; none when it had
/// no record) to `at` only if nobody moved it since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    pub runbook: String,
    pub expression: String,
    pub previous: Option<i64>,
    pub at: i64,
    /// Why this fire starts no run (recorded with it), when it does not.
    pub error: Option<String>,
}

pub(crate) const SCHEDULES: &str =
    "SELECT runbook, expression, last_fire, last_run, last_error FROM schedules
     ORDER BY runbook, expression";

/// A schedule's first record; a concurrent first record wins instead (nothing inserted).
pub(crate) const FIRST_FIRE: &str =
    "INSERT INTO schedules (runbook, expression, last_fire, last_run, last_error)
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (runbook, expression) DO NOTHING";

/// The compare-and-set: moves the schedule only from the last fire `$6` the caller read.
/// PostgreSQL re-checks `last_fire = $6` on the row a concurrent mover committed, so the second
/// of two movers updates nothing; SQLite serialises them.
pub(crate) const NEXT_FIRE: &str =
    "UPDATE schedules SET last_fire = $3, last_run = $4, last_error = $5
     WHERE runbook = $1 AND expression = $2 AND last_fire = $6";
