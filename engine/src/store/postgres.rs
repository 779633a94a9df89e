//! The PostgreSQL store: the same schema and SQL as SQLite, for shared and long-lived deployments.
//!
//! Durability maps onto `synchronous_commit`: a [`Durability::Power`] commit waits for the WAL flush
//! (the server default); a [`Durability::Process`] commit sets it `off` for that transaction, which a
//! killed client cannot lose (the server has it) and a server crash may.

use super::{Durability, EventKey, Pruned, RunRow, Store, StoreError};
use crate::run::event::Record;
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, PgPool, QueryBuilder};
use std::str::FromStr;

pub struct PgStore {
    pool: PgPool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl PgStore {
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: redacted(url),
            reason,
        };
        let opts = PgConnectOptions::from_str(url).map_err(|e| open_err(e.to_string()))?;
        // The pool retries refused connections until its timeout; one plain attempt first makes a
        // wrong URL or a stopped server an immediate, clear error.
        let probe = opts.connect().await.map_err(|e| open_err(e.to_string()))?;
        let _ = sqlx::Connection::close(probe).await;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        MIGRATOR.run(&pool).await?;
        Ok(PgStore { pool })
    }

    async fn insert_events(
        tx: &mut sqlx::PgConnection,
        events: &[Record],
    ) -> Result<(), StoreError> {
        // PostgreSQL allows 65535 bound parameters; 9 per row.
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

#[async_trait]
impl Store for PgStore {
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
        let mut tx = self.pool.begin().await?;
        if durability == Durability::Process {
            sqlx::query("SET LOCAL synchronous_commit TO off")
                .execute(&mut *tx)
                .await?;
        }
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
        Ok(())
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
        if id_or_prefix.is_empty() || !id_or_prefix.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(StoreError::NoSuchRun(id_or_prefix.to_string()));
        }
        let pattern = format!("{}%", id_or_prefix.to_ascii_lowercase());
        let mut rows = sqlx::query_as::<_, super::StoredRun>(
            "SELECT * FROM runs WHERE id LIKE $1 ORDER BY started_at LIMIT 2",
        )
        .bind(&pattern)
        .fetch_all(&self.pool)
        .await?;
        match rows.len() {
            0 => Err(StoreError::NoSuchRun(id_or_prefix.to_string())),
            1 => Ok(rows.remove(0).into()),
            _ => {
                let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE id LIKE $1")
                    .bind(&pattern)
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
        // Every statement sees the same runs, so the counts match what was deleted and a run is
        // removed whole; a concurrent change to a pruned run fails the transaction instead.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
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
