//! The embedded store: one SQLite file in WAL mode.
//!
//! Commits run with synchronous=NORMAL, which survives a killed process; a commit that must survive
//! power loss (the intent of a step with side effects) switches that one commit to FULL, so the fsync
//! is paid only where it buys safety.

use super::{Durability, StoreError};
use crate::run::event::Record;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::str::FromStr;

pub struct SqliteStore {
    pool: SqlitePool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

impl SqliteStore {
    pub async fn open(path: &str, create_dir: bool) -> Result<SqliteStore, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.to_string(),
            reason,
        };
        if path != ":memory:" {
            let parent = Path::new(path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty());
            if let Some(dir) = parent
                && !dir.is_dir()
            {
                if create_dir {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        open_err(format!("cannot create directory {}: {e}", dir.display()))
                    })?;
                } else {
                    return Err(open_err(format!(
                        "directory {} does not exist (create it, or point --db / RUNBOOK_DB elsewhere)",
                        dir.display()
                    )));
                }
            }
        }
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(|e| open_err(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        // Processes opening a new database at the same moment race to switch it to WAL and to
        // migrate it (sqlx takes no lock for SQLite migrations). The loser of either race gets
        // "locked" or a failed migration, and on retry finds the winner's work done.
        let mut attempt = 0;
        let pool = loop {
            match Self::connect_and_migrate(opts.clone()).await {
                Ok(pool) => break pool,
                Err(e) if attempt < 8 && is_open_race(&e) => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
                }
                Err(StoreError::Db(e)) => return Err(open_err(e.to_string())),
                Err(e) => return Err(e),
            }
        };
        Ok(SqliteStore { pool })
    }

    async fn connect_and_migrate(opts: SqliteConnectOptions) -> Result<SqlitePool, StoreError> {
        // One connection: a run is written by one task, and the durability switch is per connection.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        // Every pending migration in one transaction (sqlx nests each in a savepoint): a fresh
        // database is created with one commit instead of two per migration (sqlx commits each
        // migration, then its timing), and a failure leaves no half-migrated file. An up-to-date
        // database is only read here.
        let mut tx = pool.begin().await?;
        // `run_direct` is `run` on a connection: `run(&mut *tx)` makes the caller's future not
        // provably `Send` (sqlx's `Acquire` is generic over the borrow; sqlx's own tests use this).
        MIGRATOR.run_direct(None, &mut *tx, false).await?;
        tx.commit().await?;
        Ok(pool)
    }

    /// Commits with synchronous=FULL (fsync) for a [`Durability::Power`] write and NORMAL otherwise;
    /// the pragma is per connection, so it is set around this one transaction.
    async fn append_durably(
        &self,
        events: &[Record],
        durability: Durability,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        if durability == Durability::Power {
            sqlx::query("PRAGMA synchronous = FULL")
                .execute(&mut *conn)
                .await?;
        }
        let result = async {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            Self::append_in(&mut tx, events).await?;
            tx.commit().await?;
            Ok::<(), StoreError>(())
        }
        .await;
        if durability == Durability::Power {
            sqlx::query("PRAGMA synchronous = NORMAL")
                .execute(&mut *conn)
                .await?;
        }
        result
    }

    const CANDIDATES: [&str; 2] = super::claim::CANDIDATES_SQLITE;

    #[cfg(test)]
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A claim reads, then writes: taking the write lock first makes a claim by another process
    /// wait (busy_timeout) instead of failing to upgrade its read lock.
    async fn begin_claim(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// The immediate transaction already serialises every claim.
    async fn lock_runbook(
        _tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        _runbook: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// SQLite transactions are serializable already, and this store has one connection.
    async fn begin_prune(&self) -> Result<sqlx::Transaction<'_, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin().await?)
    }
}

super::body::shared_body!(SqliteStore, sqlx::Sqlite);

fn is_open_race(e: &StoreError) -> bool {
    match e {
        StoreError::Migrate(_) => true,
        StoreError::Db(e) => {
            let m = e.to_string();
            m.contains("locked") || m.contains("busy")
        }
        _ => false,
    }
}
