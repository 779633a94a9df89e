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

/// What every candidate of a claim must be, `r` being the run: without a live lease at `$1` (now),
/// and not of a runbook already at its concurrency.
macro_rules! claimable {
    () => {
        " AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.run_id = r.id AND l.expires_at >= $1)
           AND (r.concurrency IS NULL OR r.concurrency > (
                SELECT COUNT(*) FROM leases l2 JOIN runs r2 ON r2.id = l2.run_id
                WHERE r2.runbook = r.runbook AND l2.expires_at >= $1))"
    };
}

/// Orphans first: running runs whose lease expired, or that have none and started before `$2` (now
/// minus a lease's length: a run `runbook run` has just created is not an orphan before its driver
/// takes the lease); oldest first, at most `$3`. They are few (at most the runs being driven), and
/// `runs_due (status, wake_at, id)` finds them without reading the parked ones. The row is
/// `(id, runbook, concurrency, status)`.
macro_rules! orphans {
    () => {
        concat!(
            "SELECT r.id, r.runbook, r.concurrency, r.status FROM runs r
             WHERE r.status = 'running' AND r.kind = 'run'
               AND (r.started_at <= $2 OR EXISTS (SELECT 1 FROM leases e WHERE e.run_id = r.id))",
            claimable!(),
            " ORDER BY r.started_at, r.id LIMIT $3"
        )
    };
}

/// Then parked runs due by `$1`, in the order they became due, at most `$3`: read in the order of
/// `runs_due (status, wake_at, id)`, so a claim reads about as many rows as it takes however deep
/// the queue is (a runbook at its concurrency is the exception: its queued runs are read and passed
/// over).
macro_rules! due {
    () => {
        concat!(
            "SELECT r.id, r.runbook, r.concurrency, r.status FROM runs r
             WHERE r.status = 'parked' AND r.wake_at <= $1 AND r.kind = 'run'",
            claimable!(),
            " ORDER BY r.wake_at, r.id LIMIT $3"
        )
    };
}

/// The candidate queries of each backend: PostgreSQL locks what it reads and passes over rows
/// another claimer has locked; SQLite's claim holds the one write lock already.
pub(crate) const CANDIDATES_SQLITE: [&str; 2] = [orphans!(), due!()];
pub(crate) const CANDIDATES_PG: [&str; 2] = [
    concat!(orphans!(), " FOR UPDATE OF r SKIP LOCKED"),
    concat!(due!(), " FOR UPDATE OF r SKIP LOCKED"),
];

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
/// `CANDIDATES` (the candidate queries, locking if it can) and `lock_runbook` (serialising claimers
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
            let mut candidates: Vec<(String, String, Option<i64>, String)> = Vec::new();
            for query in Self::CANDIDATES {
                let room =
                    limit.saturating_sub(i64::try_from(candidates.len()).unwrap_or(i64::MAX));
                if room <= 0 {
                    break;
                }
                candidates.extend(
                    sqlx::query_as(query)
                        .bind(now)
                        .bind(now.saturating_sub(lease_ms))
                        .bind(room)
                        .fetch_all(&mut *tx)
                        .await?,
                );
            }
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

#[cfg(test)]
mod tests {
    /// How SQLite would answer each candidate query, on a migrated database.
    async fn plans() -> Vec<String> {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("plan.db");
        let store = crate::store::sqlite::SqliteStore::open(path.to_str().expect("utf-8"), false)
            .await
            .expect("open");
        let mut plans = Vec::new();
        for query in super::CANDIDATES_SQLITE {
            let rows: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {query}")))
                    .bind(1_i64)
                    .bind(0_i64)
                    .bind(8_i64)
                    .fetch_all(store.pool())
                    .await
                    .expect("explain");
            plans.push(rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n"));
        }
        plans
    }

    /// The claim's cost must not grow with the queue: the due runs are read from `runs_due` in the
    /// order they are taken, up to the LIMIT, rather than all sorted first. (The orphans, running
    /// runs only, are found through the same index and sorted: there are at most as many as runs
    /// being driven.)
    #[tokio::test]
    async fn due_runs_are_read_in_index_order_without_a_sort() {
        let plans = plans().await;
        for plan in &plans {
            let outer = plan.lines().next().unwrap_or_default();
            assert!(
                outer.contains("USING INDEX runs_due (status=?"),
                "the runs are not found through runs_due:\n{plan}"
            );
        }
        assert!(
            !plans[1].contains("TEMP B-TREE"),
            "the due runs are sorted before the LIMIT:\n{}",
            plans[1]
        );
    }
}
