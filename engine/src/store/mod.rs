//! Where runs are kept. The engine talks to a [`Store`]; SQLite is the embedded default and PostgreSQL
//! slots in behind the same trait.

mod body;
mod claim;
mod keys;
pub mod postgres;
mod requests;
mod schedules;
pub mod sqlite;

use crate::run::driver::Answer;
use crate::run::event::{Record, RunStatus};
use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("no run matches `{0}`")]
    NoSuchRun(String),
    #[error("`{prefix}` matches {count} runs; give more characters of the id")]
    Ambiguous { prefix: String, count: usize },
    #[error("unsupported database `{0}`")]
    Unsupported(String),
    #[error("run {run} in the database is unreadable: {reason}")]
    Corrupt { run: String, reason: String },
    /// A new run's key (an alert's, an Idempotency-Key) is already taken by another run.
    #[error("a run with this key exists already ({0})")]
    Duplicate(String),
}

impl StoreError {
    /// Inserting a run: a unique key taken by another run is `Duplicate` (naming the index), so a
    /// caller can look that run up rather than fail.
    pub(crate) fn from_insert(e: sqlx::Error) -> StoreError {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                let index = d.constraint().unwrap_or("").to_string();
                // SQLite names the columns, not the index, in its message.
                let which = if index.is_empty() {
                    d.message().to_string()
                } else {
                    index
                };
                StoreError::Duplicate(which)
            }
            _ => StoreError::Db(e),
        }
    }
}

/// A run's row: what `runbook runs` lists and `show` starts from. Read back from the HTTP API's run
/// list too (`runbook runs --server`), without the runbook text, which the API does not send.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RunRow {
    pub id: String,
    pub runbook: String,
    pub title: Option<String>,
    pub source_path: Option<String>,
    pub runbook_sha256: String,
    #[serde(skip)]
    pub runbook_text: String,
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    pub status: RunStatus,
    pub actor: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub parent_run: Option<String>,
    pub kind: RunKind,
    /// The runbook's `concurrency:` when the run was created: how many of its runs workers drive
    /// at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// For a run an alert started: the alert's de-duplication key (at most one unfinished run per
    /// runbook and key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_key: Option<String>,
    /// For a run an API client started with an Idempotency-Key: that key, under the client's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_key: Option<String>,
}

/// Whether a run acts, or only shows what it would change (`runbook plan`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Run,
    Plan,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Run => "run",
            RunKind::Plan => "plan",
        }
    }

    pub fn parse(s: &str) -> Option<RunKind> {
        [RunKind::Run, RunKind::Plan]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A `runs` row as both stores hold it (params as JSON text), decoded with sqlx's `FromRow`.
#[derive(sqlx::FromRow)]
pub(crate) struct StoredRun {
    id: String,
    runbook: String,
    title: Option<String>,
    source_path: Option<String>,
    runbook_sha256: String,
    runbook_text: String,
    params: String,
    status: String,
    actor: String,
    started_at: i64,
    finished_at: Option<i64>,
    parent_run: Option<String>,
    kind: String,
    concurrency: Option<i64>,
    trigger_key: Option<String>,
    request_key: Option<String>,
}

impl TryFrom<StoredRun> for RunRow {
    type Error = StoreError;

    /// A row written by something other than this engine (or a newer one) is an error naming the
    /// run, not a guess.
    fn try_from(r: StoredRun) -> Result<RunRow, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            run: r.id.clone(),
            reason,
        };
        let status = RunStatus::parse(&r.status)
            .ok_or_else(|| corrupt(format!("unknown status `{}`", r.status)))?;
        let params = serde_json::from_str(&r.params)
            .map_err(|e| corrupt(format!("its params are not JSON: {e}")))?;
        let kind =
            RunKind::parse(&r.kind).ok_or_else(|| corrupt(format!("unknown kind `{}`", r.kind)))?;
        Ok(RunRow {
            id: r.id,
            runbook: r.runbook,
            title: r.title,
            source_path: r.source_path,
            runbook_sha256: r.runbook_sha256,
            runbook_text: r.runbook_text,
            params,
            status,
            actor: r.actor,
            started_at: r.started_at,
            finished_at: r.finished_at,
            parent_run: r.parent_run,
            kind,
            concurrency: r.concurrency.and_then(|n| u32::try_from(n).ok()),
            trigger_key: r.trigger_key,
            request_key: r.request_key,
        })
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How hard a write must be on disk when it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Survives a killed process (SQLite WAL with synchronous=NORMAL; one PostgreSQL commit).
    Process,
    /// Survives power loss: fsync'd. Spent before a step's side effect starts.
    Power,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Records a new run and its first events, in one transaction.
    async fn create_run(&self, run: &RunRow, events: &[Record]) -> Result<(), StoreError>;

    /// Creates a run as `create_run` does, with its lease held by `holder` until `expires_at` in
    /// the same transaction: no moment exists in which the run is running without a lease, which
    /// a worker claiming orphaned runs would take.
    async fn create_run_leased(
        &self,
        run: &RunRow,
        events: &[Record],
        holder: &str,
        expires_at: i64,
    ) -> Result<(), StoreError>;

    /// Appends events (already chained) in one transaction, updating the run's row when an event
    /// finishes it.
    async fn append(&self, events: &[Record], durability: Durability) -> Result<(), StoreError>;

    /// Most recent runs first.
    async fn runs(&self, limit: i64) -> Result<Vec<RunRow>, StoreError>;

    /// A run by id or unique id prefix.
    async fn run(&self, id_or_prefix: &str) -> Result<RunRow, StoreError>;

    async fn events(&self, run_id: &str) -> Result<Vec<Record>, StoreError>;

    /// At most `limit` of a run's events after sequence number `after_seq` (-1: from the first).
    async fn events_page(
        &self,
        run_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<Record>, StoreError>;

    /// What runs of `runbook` alert key `key` has started: the unfinished one, the last that ended.
    async fn trigger_runs(&self, runbook: &str, key: &str) -> Result<TriggerRuns, StoreError>;

    /// The run created with this (subject-prefixed) Idempotency-Key, if any.
    async fn run_by_request_key(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Runs, newest first (by `started_at`, then `id`): only those in `status`, of `runbook`, and
    /// after the cursor `before`, when given; at most `limit`. The cursor is the last run of the
    /// previous page, `(started_at, Some(id))`, or an instant alone (`None`: runs started before it).
    async fn runs_where(
        &self,
        status: Option<RunStatus>,
        runbook: Option<&str>,
        before: Option<(i64, Option<&str>)>,
        limit: i64,
    ) -> Result<Vec<RunRow>, StoreError>;

    /// How many runs (not plans) there are in each status.
    async fn count_by_status(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Takes the run's lease for `holder` until `expires_at`, if it is free, expired, already
    /// `holder`'s, or held by `stale` (a holder known to be dead). Returns the current holder and
    /// expiry when someone else has it.
    async fn acquire_lease(
        &self,
        run_id: &str,
        holder: &str,
        now: i64,
        expires_at: i64,
        stale: Option<&str>,
    ) -> Result<Option<(String, i64)>, StoreError>;

    /// Extends `holder`'s lease; false when it was lost (expired and taken by another).
    async fn renew_lease(
        &self,
        run_id: &str,
        holder: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError>;

    async fn release_lease(&self, run_id: &str, holder: &str) -> Result<(), StoreError>;

    /// The current holder of the run's lease and its expiry, if any.
    async fn lease(&self, run_id: &str) -> Result<Option<(String, i64)>, StoreError>;

    /// Records an answer to an approval request; false when the request was answered already (the
    /// first answer wins).
    async fn answer_approval(
        &self,
        run_id: &str,
        answer: &StoredAnswer,
    ) -> Result<bool, StoreError>;

    /// The answers given to a run's approval requests, oldest first.
    async fn approval_answers(&self, run_id: &str) -> Result<Vec<Answer>, StoreError>;

    /// Records a request to a run (a cancel, a note) and, like an approval answer, makes the run
    /// due now if it is parked (or notes it, if it is being driven, for the park that may follow).
    async fn record_request(&self, run_id: &str, request: &RunRequest) -> Result<(), StoreError>;

    /// Every request recorded for a run, oldest first; which of them were taken is the journal's to
    /// say (each event that takes one names its id).
    async fn run_requests(&self, run_id: &str) -> Result<Vec<RunRequest>, StoreError>;

    /// Events of every run written at `since <= at < until`, ordered by `(at, run_id, seq)`: one page
    /// of at most `limit`, starting after the key `after` (the last event of the previous page).
    async fn events_between(
        &self,
        since: i64,
        until: i64,
        after: Option<EventKey<'_>>,
        limit: i64,
    ) -> Result<Vec<Record>, StoreError>;

    /// Deletes every run that finished (succeeded or failed) before `finished_before`: its row, all
    /// its events and its lease, in one transaction. Running, waiting and interrupted runs are kept,
    /// and a run is removed whole or not at all, so every chain left verifies. With `dry_run`, only
    /// counts what would go.
    async fn prune(&self, finished_before: i64, dry_run: bool) -> Result<Pruned, StoreError>;

    /// Picks at most `limit` runs that are due and takes their lease for `holder` until
    /// `now + lease_ms`, atomically: parked runs whose wake-up time has come, and running runs whose
    /// driver's lease expired (left by a process that died). Runs of a runbook with a `concurrency`
    /// are skipped while that many of its runs hold a live lease. Two claimers never get the same run.
    async fn claim(
        &self,
        holder: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// Who holds a live lease at `now` (each holder once): a worker judges which of them are
    /// processes of its own host that no longer exist.
    async fn lease_holders(&self, now: i64) -> Result<Vec<String>, StoreError>;

    /// Ends every lease `holder` has (a holder known to be dead), so its runs are claimed at once
    /// rather than when the leases run out. Returns how many there were.
    async fn expire_leases_of(&self, holder: &str) -> Result<u64, StoreError>;

    /// Every schedule's record (its last fire), by runbook and expression.
    async fn schedules(&self) -> Result<Vec<ScheduleRow>, StoreError>;

    /// Moves a schedule to the fire `fire.at` if its last fire is still `fire.previous` (none: it
    /// has no record yet) and, in the same transaction, creates `run` (its row and first events,
    /// as `create_run`). Returns false, having written nothing, when another process moved it
    /// first: exactly one of several servers starts the run of a fire.
    async fn fire_schedule(
        &self,
        fire: &Fire,
        run: Option<(&RunRow, &[Record])>,
    ) -> Result<bool, StoreError>;
}

pub use claim::Claimed;
pub use keys::TriggerRuns;
pub use requests::{Asked, RunRequest};
pub use schedules::{Fire, ScheduleRow};

/// Where an event sits in the order `events_between` pages through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventKey<'a> {
    pub at: i64,
    pub run_id: &'a str,
    pub seq: i64,
}

/// What `prune` removed (or, for a dry run, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    pub runs: u64,
    pub events: u64,
}

/// An approval answer as stored, with the attempt it answers and when.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnswer {
    pub answer: Answer,
    pub attempt: u32,
    pub at: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct AnswerRow {
    step_id: String,
    attempt: i64,
    approve: bool,
    answered_by: String,
    how: String,
    comment: Option<String>,
}

impl From<AnswerRow> for Answer {
    fn from(r: AnswerRow) -> Answer {
        Answer {
            step: r.step_id,
            attempt: u32::try_from(r.attempt).ok(),
            approve: r.approve,
            by: r.answered_by,
            how: r.how,
            comment: r.comment,
        }
    }
}

/// The approval-answer SQL, the same text on both backends.
pub(crate) const ANSWER_APPROVAL: &str = "INSERT INTO approval_answers
     (run_id, step_id, attempt, approve, answered_by, how, comment, at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING";
/// An answer (or a request: a cancel, a note) makes a parked run due now; on a run being driven it
/// is noted, so that the park that may follow (its driver having looked at the inbox just before)
/// wakes at once.
pub(crate) const ANSWER_WAKES: &str = "UPDATE runs SET wake_at = $2
     WHERE id = $1 AND status IN ('parked', 'running') AND (wake_at IS NULL OR wake_at > $2)";
pub(crate) const APPROVAL_ANSWERS: &str =
    "SELECT step_id, attempt, approve, answered_by, how, comment
     FROM approval_answers WHERE run_id = $1 ORDER BY at, step_id";

/// The lease SQL, the same text on both backends.
pub(crate) const ACQUIRE_LEASE: &str =
    "INSERT INTO leases (run_id, holder, expires_at) VALUES ($1, $2, $3)
     ON CONFLICT (run_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
     WHERE leases.expires_at < $4 OR leases.holder = excluded.holder OR leases.holder = $5";
pub(crate) const RENEW_LEASE: &str =
    "UPDATE leases SET expires_at = $1 WHERE run_id = $2 AND holder = $3";
pub(crate) const RELEASE_LEASE: &str = "DELETE FROM leases WHERE run_id = $1 AND holder = $2";
pub(crate) const NEW_LEASE: &str =
    "INSERT INTO leases (run_id, holder, expires_at) VALUES ($1, $2, $3)";
pub(crate) const GET_LEASE: &str = "SELECT holder, expires_at FROM leases WHERE run_id = $1";

/// One page of events across runs, the same text on both backends: $1 <= at < $2, after the key
/// ($3, $4, $5), at most $6.
pub(crate) const EVENTS_BETWEEN: &str = "SELECT * FROM events
     WHERE at >= $1 AND at < $2
       AND (at > $3 OR (at = $3 AND (run_id > $4 OR (run_id = $4 AND seq > $5))))
     ORDER BY at, run_id, seq
     LIMIT $6";

/// The runs `prune` may remove: finished for good before $1. `interrupted` runs have an end time
/// too, but can be resumed.
macro_rules! prunable {
    () => {
        "SELECT id FROM runs WHERE status IN ('succeeded', 'failed') AND finished_at IS NOT NULL AND finished_at < $1"
    };
}
pub(crate) const PRUNE_COUNT_RUNS: &str = concat!("SELECT COUNT(*) FROM (", prunable!(), ") p");
pub(crate) const PRUNE_COUNT_EVENTS: &str = concat!(
    "SELECT COUNT(*) FROM events WHERE run_id IN (",
    prunable!(),
    ")"
);
pub(crate) const PRUNE_EVENTS: &str =
    concat!("DELETE FROM events WHERE run_id IN (", prunable!(), ")");
pub(crate) const PRUNE_ANSWERS: &str = concat!(
    "DELETE FROM approval_answers WHERE run_id IN (",
    prunable!(),
    ")"
);
pub(crate) const PRUNE_REQUESTS: &str = concat!(
    "DELETE FROM run_requests WHERE run_id IN (",
    prunable!(),
    ")"
);
pub(crate) const PRUNE_LEASES: &str =
    concat!("DELETE FROM leases WHERE run_id IN (", prunable!(), ")");
pub(crate) const PRUNE_RUNS: &str = concat!("DELETE FROM runs WHERE id IN (", prunable!(), ")");

/// When a batch of events makes the run due for a worker, if it changes that: `(wake, keep)`. A run
/// that parks (`run_detached`) is due at its journaled wake-up (none while it waits only for an
/// approval), or earlier if `keep` and an approval answer made it due while it was driven; any other
/// change of status clears it.
pub(crate) fn wake_after(events: &[Record]) -> (Option<i64>, bool) {
    use crate::run::event::Event;
    let parked = events.iter().rev().find_map(|r| match r.event() {
        Ok(Event::RunDetached { wake_at_ms, .. }) => Some(Some(wake_at_ms)),
        Ok(
            Event::RunFinished { .. }
            | Event::RunInterrupted { .. }
            | Event::RunParked { .. }
            | Event::RunResumed { .. },
        ) => Some(None),
        _ => None,
    });
    match parked {
        Some(Some(wake)) => {
            // An answer noted before this batch's own resume was read by the driver already.
            let resumed_here = events
                .iter()
                .any(|r| matches!(r.event(), Ok(Event::RunResumed { .. })));
            (wake, !resumed_here)
        }
        _ => (None, false),
    }
}

/// The status a batch of events leaves the run's row in, if it changes it, with its end time (none
/// while the run can still go on).
pub(crate) fn final_status(events: &[Record]) -> Option<(RunStatus, Option<i64>)> {
    use crate::run::event::Event;
    events.iter().rev().find_map(|r| match r.event() {
        Ok(Event::RunFinished { status, .. }) => Some((status, Some(r.at_ms))),
        Ok(Event::RunInterrupted { .. }) => Some((RunStatus::Interrupted, Some(r.at_ms))),
        Ok(Event::RunParked { .. }) => Some((RunStatus::Waiting, None)),
        Ok(Event::RunDetached { .. }) => Some((RunStatus::Parked, None)),
        Ok(Event::RunResumed { .. }) => Some((RunStatus::Running, None)),
        _ => None,
    })
}

/// Opens the store a `--db` value names: a `postgres://` URL, or a SQLite path or `sqlite://` URL.
pub async fn open(db: &str, create_dir: bool) -> Result<Box<dyn Store>, StoreError> {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        return Ok(Box::new(postgres::PgStore::open(db).await?));
    }
    let path = db.strip_prefix("sqlite://").unwrap_or(db);
    Ok(Box::new(sqlite::SqliteStore::open(path, create_dir).await?))
}

#[cfg(test)]
mod tests {
    use super::wake_after;
    use crate::run::event::{Chain, Event, Record, RunStatus};

    fn batch(events: &[Event]) -> Vec<Record> {
        let mut c = Chain::new("r");
        events.iter().map(|e| c.seal(1, "t", e)).collect()
    }

    fn detached(wake: Option<i64>) -> Event {
        Event::RunDetached {
            wake_at_ms: wake,
            approvals: if wake.is_none() {
                vec!["a".into()]
            } else {
                Vec::new()
            },
        }
    }

    fn resumed() -> Event {
        Event::RunResumed {
            runbook_sha256: String::new(),
            runbook_text: None,
        }
    }

    #[test]
    fn a_park_sets_the_wake_up_and_anything_else_clears_it() {
        assert_eq!(wake_after(&batch(&[detached(Some(5))])), (Some(5), true));
        // Waiting only for an approval: due when answered (or when an answer was noted).
        assert_eq!(wake_after(&batch(&[detached(None)])), (None, true));
        // A resume in the same batch read the inbox itself: an earlier note is stale.
        assert_eq!(
            wake_after(&batch(&[resumed(), detached(Some(5))])),
            (Some(5), false)
        );
        assert_eq!(
            wake_after(&batch(&[detached(Some(5)), resumed()])),
            (None, false)
        );
        let ended = Event::RunFinished {
            status: RunStatus::Failed,
            error: None,
        };
        assert_eq!(
            wake_after(&batch(&[detached(Some(5)), ended])),
            (None, false)
        );
        assert_eq!(
            wake_after(&batch(&[Event::StepSkipped {
                step: "s".into(),
                reason: "r".into()
            }])),
            (None, false)
        );
    }
}
