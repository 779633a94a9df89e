//! Where runs are kept. The engine talks to a [`Store`]; SQLite is the embedded default and PostgreSQL
//! slots in behind the same trait.

pub mod postgres;
pub mod sqlite;

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
}

/// A run's row: what `runbook runs` lists and `show` starts from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunRow {
    pub id: String,
    pub runbook: String,
    pub title: Option<String>,
    pub source_path: Option<String>,
    pub runbook_sha256: String,
    #[serde(skip)]
    pub runbook_text: String,
    pub params: serde_json::Value,
    pub status: String,
    pub actor: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub parent_run: Option<String>,
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

    /// Appends events (already chained) in one transaction, updating the run's row when an event
    /// finishes it.
    async fn append(&self, events: &[Record], durability: Durability) -> Result<(), StoreError>;

    /// Most recent runs first.
    async fn runs(&self, limit: i64) -> Result<Vec<RunRow>, StoreError>;

    /// A run by id or unique id prefix.
    async fn run(&self, id_or_prefix: &str) -> Result<RunRow, StoreError>;

    async fn events(&self, run_id: &str) -> Result<Vec<Record>, StoreError>;
}

/// The status a batch of events leaves the run's row in, if it changes it, with its end time (none
/// while the run can still go on).
pub(crate) fn final_status(events: &[Record]) -> Option<(RunStatus, Option<i64>)> {
    use crate::run::event::Event;
    events.iter().rev().find_map(|r| match r.event() {
        Ok(Event::RunFinished { status, .. }) => Some((status, Some(r.at_ms))),
        Ok(Event::RunInterrupted { .. }) => Some((RunStatus::Interrupted, Some(r.at_ms))),
        Ok(Event::RunParked { .. }) => Some((RunStatus::Waiting, None)),
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
