//! Claiming due runs for a worker: the same SQL on both backends, made atomic the way each can.
//!
//! PostgreSQL locks the candidate rows with `FOR UPDATE SKIP LOCKED`, so concurrent claimers pass
//! over each other's picks instead of waiting, and serialises only the claimers of one runbook that
//! has a `concurrency` (a transaction-scoped advisory lock) while it counts that runbook's live
//! leases. SQLite runs the whole claim in one `BEGIN IMMEDIATE` transaction, which holds the
//! database's single write lock from the first statement.
//!
//! A claim takes the run's lease and changes nothing else: the run's row keeps saying it is due
//! until the claimer's driver journals `run_resumed`, so a claimer that dies in between leaves the
//! run to be claimed again once its lease expires.

/// A run a worker has claimed, and its lease with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub run_id: String,
    pub runbook: String,
    /// The run was `running` under a lease that expired: its driver died, and this claim takes it
    /// over (by the recovery rules of `resume`).
    pub took_over: bool,
}

/// The candidates of a claim, in the order they became due: parked runs due by `$1` (now); running
/// runs whose lease expired, or that have none and started before `$2` (now minus a lease's length:
/// a run `runbook run` has just created is not an orphan before its driver takes the lease); none
/// with a live lease, none of a runbook already at its concurrency. At most `$3`. The row is
/// `(id, runbook, concurrency, status)`.
macro_rules! candidates {
    () => {
        "SELECT r.id, r.runbook, r.concurrency, r.status FROM runs r
         WHERE r.kind = 'run'
           AND ((r.status = 'parked' AND r.wake_at <= $1)
                OR (r.status = 'running'
                    AND (r.started_at <= $2 OR EXISTS (SELECT 1 FROM leases e WHERE e.run_id = r.id))))
           AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.run_id = r.id AND l.expires_at >= $1)
           AND (r.concurrency IS NULL OR r.concurrency > (
                SELECT COUNT(*) FROM leases l2 JOIN runs r2 ON r2.id = l2.run_id
                WHERE r2.runbook = r.runbook AND l2.expires_at >= $1))
         ORDER BY COALESCE(r.wake_at, r.started_at), r.id
         LIMIT $3"
    };
}
pub(crate) const CANDIDATES_SQLITE: &str = candidates!();
pub(crate) const CANDIDATES_PG: &str = concat!(candidates!(), " FOR UPDATE OF r SKIP LOCKED");

/// Runs of runbook `$1` holding a live lease at `$2`.
pub(crate) const LIVE_OF_RUNBOOK: &str =
    "SELECT COUNT(*) FROM leases l JOIN runs r ON r.id = l.run_id
     WHERE r.runbook = $1 AND l.expires_at >= $2";

/// Holders of a live lease at `$1`.
pub(crate) const LEASE_HOLDERS: &str =
    "SELECT DISTINCT holder FROM leases WHERE expires_at >= $1 ORDER BY holder";

/// Every lease of holder `$1`, expired: a running run with an expired lease is an orphan to claim.
pub(crate) const EXPIRE_LEASES_OF: &str =
    "UPDATE leases SET expires_at = 0 WHERE holder = $1 AND expires_at > 0";

/// The body of `Store::claim` for one backend, which supplies `begin_claim` (its transaction),
/// `CANDIDATES` (the candidate query, locking if it can) and `lock_runbook` (serialising claimers
/// of one runbook, or nothing where the transaction already does).
macro_rules! claim_body {
    ($db:ty) => {
        async fn claim_in(
            &self,
            holder: &str,
            now: i64,
            lease_ms: i64,
            limit: i64,
        ) -> Result<Vec<$crate::store::Claimed>, $crate::store::StoreError> {
            use std::collections::BTreeMap;
            if limit <= 0 {
                return Ok(Vec::new());
            }
            let mut tx = self.begin_claim().await?;
            let candidates: Vec<(String, String, Option<i64>, String)> =
                sqlx::query_as(Self::CANDIDATES)
                    .bind(now)
                    .bind(now.saturating_sub(lease_ms))
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
            // Counted again under the runbook's lock: the filter above saw no concurrent claim.
            // Locks are taken in name order, so two claimers never wait on each other in a cycle.
            let mut live: BTreeMap<&str, i64> = BTreeMap::new();
            for (_, runbook, limit, _) in &candidates {
                if limit.is_some() && !live.contains_key(runbook.as_str()) {
                    live.insert(runbook, 0);
                }
            }
            for (runbook, count) in live.iter_mut() {
                Self::lock_runbook(&mut tx, runbook).await?;
                *count = sqlx::query_scalar($crate::store::claim::LIVE_OF_RUNBOOK)
                    .bind(*runbook)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
            }
            let mut claimed = Vec::new();
            for (id, runbook, most, status) in &candidates {
                if let (Some(most), Some(count)) = (most, live.get(runbook.as_str()))
                    && count >= most
                {
                    continue;
                }
                let took = sqlx::query($crate::store::ACQUIRE_LEASE)
                    .bind(id)
                    .bind(holder)
                    .bind(now.saturating_add(lease_ms))
                    .bind(now)
                    .bind("")
                    .execute(&mut *tx)
                    .await?;
                // Someone (a `runbook resume`) took the lease since the candidates were read.
                if took.rows_affected() != 1 {
                    continue;
                }
                if let Some(count) = live.get_mut(runbook.as_str()) {
                    *count += 1;
                }
                claimed.push($crate::store::Claimed {
                    run_id: id.clone(),
                    runbook: runbook.clone(),
                    took_over: status == "running",
                });
            }
            tx.commit().await?;
            Ok(claimed)
        }
    };
}

pub(crate) use claim_body;
