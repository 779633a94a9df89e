//! The embedded store: one SQLite file in WAL mode.
//!
//! Commits run with synchronous=NORMAL, which survives a killed process; a commit that must survive
//! power loss (the intent of a step with side effects) switches that one commit to FULL, so the fsync
//! is paid only where it buys safety.

use super::{Durability, EventKey, Pruned, RunRow, Store, StoreError};
use crate::run::event::Record;
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, SqlitePool};
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
        MIGRATOR.run(&pool).await?;
        Ok(pool)
    }

    async fn insert_events(
        tx: &mut sqlx::SqliteConnection,
        events: &[Record],
    ) -> Result<(), StoreError> {
        // SQLite allows 32766 bound parameters; 9 per row.
        for chunk in events.chunks(1000) {
            let mut qb = QueryBuilder::new(
                "INSERT INTO events (run_id, seq, at, actor, kind, step_id, data, prev_hash, hash) ",
            );
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(&r.run_id)
                    .push_bind(r.seq)
                    .push_bind(r.at_ms)
                    .push_bind(&r.actor)
                    .push_bind(&r.kind)
                    .push_bind(&r.step)
                    .push_bind(&r.data)
                    .push_bind(&r.prev_hash)
                    .push_bind(&r.hash);
            });
            qb.build().execute(&mut *tx).await?;
        }
        Ok(())
    }
}

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

#[async_trait]
impl Store for SqliteStore {
    async fn create_run(&self, run: &RunRow, events: &[Record]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO runs (id, runbook, title, source_path, runbook_sha256, runbook_text, params, status, actor, started_at, finished_at, parent_run)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&run.id)
        .bind(&run.runbook)
        .bind(&run.title)
        .bind(&run.source_path)
        .bind(&run.runbook_sha256)
        .bind(&run.runbook_text)
        .bind(run.params.to_string())
        .bind(&run.status)
        .bind(&run.actor)
        .bind(run.started_at)
        .bind(run.finished_at)
        .bind(&run.parent_run)
        .execute(&mut *tx)
        .await?;
        Self::insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn append(&self, events: &[Record], durability: Durability) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        if durability == Durability::Power {
            sqlx::query("PRAGMA synchronous = FULL")
                .execute(&mut *conn)
                .await?;
        }
        let result = async {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            Self::insert_events(&mut tx, events).await?;
            if let Some((status, at)) = super::final_status(events) {
                sqlx::query("UPDATE runs SET status = $1, finished_at = $2 WHERE id = $3")
                    .bind(status.as_str())
                    .bind(at)
                    .bind(&events[0].run_id)
                    .execute(&mut *tx)
                    .await?;
            }
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

    async fn runs(&self, limit: i64) -> Result<Vec<RunRow>, StoreError> {
        let rows = sqlx::query_as::<_, super::StoredRun>(
            "SELECT * FROM runs ORDER BY started_at DESC, id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(RunRow::from).collect())
    }

    async fn run(&self, id_or_prefix: &str) -> Result<RunRow, StoreError> {
        // Run ids are hex; anything else cannot match and must not reach LIKE as a pattern.
        if id_or_prefix.is_empty() || !id_or_prefix.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(StoreError::NoSuchRun(id_or_prefix.to_string()));
        }
        let mut rows = sqlx::query_as::<_, super::StoredRun>(
            "SELECT * FROM runs WHERE id LIKE $1 ORDER BY started_at LIMIT 2",
        )
        .bind(format!("{}%", id_or_prefix.to_ascii_lowercase()))
        .fetch_all(&self.pool)
        .await?;
        match rows.len() {
            0 => Err(StoreError::NoSuchRun(id_or_prefix.to_string())),
            1 => Ok(rows.remove(0).into()),
            _ => {
                if let Some(exact) = rows.into_iter().find(|r| r.id == id_or_prefix) {
                    return Ok(exact.into());
                }
                let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE id LIKE $1")
                    .bind(format!("{}%", id_or_prefix.to_ascii_lowercase()))
                    .fetch_one(&self.pool)
                    .await?;
                Err(StoreError::Ambiguous {
                    prefix: id_or_prefix.to_string(),
                    count: usize::try_from(count).unwrap_or(usize::MAX),
                })
            }
        }
    }

    async fn events(&self, run_id: &str) -> Result<Vec<Record>, StoreError> {
        Ok(
            sqlx::query_as::<_, Record>("SELECT * FROM events WHERE run_id = $1 ORDER BY seq")
                .bind(run_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn acquire_lease(
        &self,
        run_id: &str,
        holder: &str,
        now: i64,
        expires_at: i64,
        stale: Option<&str>,
    ) -> Result<Option<(String, i64)>, StoreError> {
        let done = sqlx::query(super::ACQUIRE_LEASE)
            .bind(run_id)
            .bind(holder)
            .bind(expires_at)
            .bind(now)
            .bind(stale.unwrap_or(""))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 1 {
            return Ok(None);
        }
        Ok(Some(self.lease(run_id).await?.unwrap_or_default()))
    }

    async fn renew_lease(
        &self,
        run_id: &str,
        holder: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(super::RENEW_LEASE)
            .bind(expires_at)
            .bind(run_id)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_lease(&self, run_id: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query(super::RELEASE_LEASE)
            .bind(run_id)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn answer_approval(
        &self,
        run_id: &str,
        a: &super::StoredAnswer,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(super::ANSWER_APPROVAL)
            .bind(run_id)
            .bind(&a.answer.step)
            .bind(i64::from(a.attempt))
            .bind(a.answer.approve)
            .bind(&a.answer.by)
            .bind(&a.answer.how)
            .bind(&a.answer.comment)
            .bind(a.at)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn approval_answers(
        &self,
        run_id: &str,
    ) -> Result<Vec<crate::run::driver::Answer>, StoreError> {
        let rows: Vec<super::AnswerRow> = sqlx::query_as(super::APPROVAL_ANSWERS)
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn lease(&self, run_id: &str) -> Result<Option<(String, i64)>, StoreError> {
        let row: Option<(String, i64)> = sqlx::query_as(super::GET_LEASE)
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row)
    }

    async fn events_between(
        &self,
        since: i64,
        until: i64,
        after: Option<EventKey<'_>>,
        limit: i64,
    ) -> Result<Vec<Record>, StoreError> {
        let after = after.unwrap_or(EventKey {
            at: i64::MIN,
            run_id: "",
            seq: i64::MIN,
        });
        let rows = sqlx::query_as::<_, Record>(super::EVENTS_BETWEEN)
            .bind(since)
            .bind(until)
            .bind(after.at)
            .bind(after.run_id)
            .bind(after.seq)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    async fn prune(&self, finished_before: i64, dry_run: bool) -> Result<Pruned, StoreError> {
        let mut tx = self.pool.begin().await?;
        if dry_run {
            let runs: i64 = sqlx::query_scalar(super::PRUNE_COUNT_RUNS)
                .bind(finished_before)
                .fetch_one(&mut *tx)
                .await?;
            let events: i64 = sqlx::query_scalar(super::PRUNE_COUNT_EVENTS)
                .bind(finished_before)
                .fetch_one(&mut *tx)
                .await?;
            tx.rollback().await?;
            return Ok(Pruned {
                runs: u64::try_from(runs).unwrap_or(0),
                events: u64::try_from(events).unwrap_or(0),
            });
        }
        let deleted_events = sqlx::query(super::PRUNE_EVENTS)
            .bind(finished_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        for also in [super::PRUNE_LEASES, super::PRUNE_ANSWERS] {
            sqlx::query(also)
                .bind(finished_before)
                .execute(&mut *tx)
                .await?;
        }
        let deleted_runs = sqlx::query(super::PRUNE_RUNS)
            .bind(finished_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(Pruned {
            runs: deleted_runs,
            events: deleted_events,
        })
    }
}
