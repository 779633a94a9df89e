//! The PostgreSQL store: the same schema and SQL as SQLite, for shared and long-lived deployments.
//!
//! Durability maps onto `synchronous_commit`: a [`Durability::Power`] commit waits for the WAL flush
//! (the server default); a [`Durability::Process`] commit sets it `off` for that transaction, which a
//! killed client cannot lose (the server has it) and a server crash may.

use super::{Durability, StoreError};
use crate::run::event::Record;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, PgPool};
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

    /// A [`Durability::Process`] commit does not wait for the WAL flush; a killed client cannot
    /// lose it, a server crash may.
    async fn append_durably(
        &self,
        events: &[Record],
        durability: Durability,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if durability == Durability::Process {
            sqlx::query("SET LOCAL synchronous_commit TO off")
                .execute(&mut *tx)
                .await?;
        }
        Self::append_in(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    const CANDIDATES: [&str; 2] = super::claim::CANDIDATES_PG;

    async fn begin_claim(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// Claimers of one runbook take turns (until their commit) to count its live leases; claimers
    /// of other runbooks pass.
    async fn lock_runbook(
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        runbook: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(runbook)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Every statement of a prune sees the same runs, so the counts match what was deleted and a
    /// run is removed whole; a concurrent change to a pruned run fails the transaction instead.
    async fn begin_prune(&self) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

super::body::shared_body!(PgStore, sqlx::Postgres);
