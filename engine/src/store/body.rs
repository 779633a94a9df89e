//! The part of a store both backends share: the same SQL text, bound the same way. `shared_body!`
//! writes it for one backend's pool type, which then only supplies what truly differs: opening,
//! migrations, and how a commit is made durable (`append`) or isolated (`begin_prune`).
//!
//! A macro rather than code generic over `sqlx::Database`: the generic form needs an `Encode` +
//! `Type` + `Executor` bound per bound type and per query, which buries the SQL it is meant to share.

macro_rules! shared_body {
    ($store:ty, $db:ty) => {
        impl $store {
            $crate::store::claim::claim_body!($db);
            $crate::store::requests::requests_body!();

            /// Inserts chained events; in the caller's transaction.
            async fn insert_events(
                tx: &mut <$db as sqlx::Database>::Connection,
                events: &[$crate::run::event::Record],
            ) -> Result<(), $crate::store::StoreError> {
                // SQLite allows 32766 bound parameters, PostgreSQL 65535; 9 per row.
                for chunk in events.chunks(1000) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
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

            /// Inserts events and moves the run's row to the status they leave it in; in the
            /// caller's transaction, so the row never disagrees with the journal.
            async fn append_in(
                tx: &mut <$db as sqlx::Database>::Connection,
                events: &[$crate::run::event::Record],
            ) -> Result<(), $crate::store::StoreError> {
                Self::insert_events(tx, events).await?;
                if let (Some((status, at)), Some(first)) =
                    ($crate::store::final_status(events), events.first())
                {
                    let (wake, keep) = $crate::store::wake_after(events);
                    sqlx::query(
                        "UPDATE runs SET status = $1, finished_at = $2,
                           wake_at = CASE WHEN $3 AND wake_at IS NOT NULL AND ($4 IS NULL OR wake_at < $4)
                                          THEN wake_at ELSE $4 END
                         WHERE id = $5",
                    )
                    .bind(status.as_str())
                    .bind(at)
                    .bind(keep)
                    .bind(wake)
                    .bind(&first.run_id)
                    .execute(&mut *tx)
                    .await?;
                    // A run that stops being driven (parked, waiting, ended) lets its lease go in
                    // the same commit, so the driver's release that follows writes nothing (and
                    // waits for no flush); a crash between the two cannot leave the lease behind.
                    if status != $crate::run::event::RunStatus::Running {
                        sqlx::query("DELETE FROM leases WHERE run_id = $1")
                            .bind(&first.run_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                Ok(())
            }

            /// Inserts a run's row and its first events; in the caller's transaction.
            async fn insert_run(
                tx: &mut <$db as sqlx::Database>::Connection,
                run: &$crate::store::RunRow,
                events: &[$crate::run::event::Record],
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO runs (id, runbook, title, source_path, runbook_sha256, runbook_text, params, status, actor, started_at, finished_at, parent_run, kind, concurrency, trigger_key, request_key)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
                )
                .bind(&run.id)
                .bind(&run.runbook)
                .bind(&run.title)
                .bind(&run.source_path)
                .bind(&run.runbook_sha256)
                .bind(&run.runbook_text)
                .bind(run.params.to_string())
                .bind(run.status.as_str())
                .bind(&run.actor)
                .bind(run.started_at)
                .bind(run.finished_at)
                .bind(&run.parent_run)
                .bind(run.kind.as_str())
                .bind(run.concurrency.map(i64::from))
                .bind(&run.trigger_key)
                .bind(&run.request_key)
                .execute(&mut *tx)
                .await
                .map_err($crate::store::StoreError::from_insert)?;
                // A run may be created already parked (enqueued): its row follows its events.
                Self::append_in(tx, events).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn create_run(
                &self,
                run: &$crate::store::RunRow,
                events: &[$crate::run::event::Record],
            ) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::insert_run(&mut tx, run, events).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn create_run_leased(
                &self,
                run: &$crate::store::RunRow,
                events: &[$crate::run::event::Record],
                holder: &str,
                expires_at: i64,
            ) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                Self::insert_run(&mut tx, run, events).await?;
                sqlx::query($crate::store::NEW_LEASE)
                    .bind(&run.id)
                    .bind(holder)
                    .bind(expires_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn schedules(
                &self,
            ) -> Result<Vec<$crate::store::ScheduleRow>, $crate::store::StoreError> {
                Ok(sqlx::query_as($crate::store::schedules::SCHEDULES)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn fire_schedule(
                &self,
                fire: &$crate::store::Fire,
                run: Option<(&$crate::store::RunRow, &[$crate::run::event::Record])>,
            ) -> Result<bool, $crate::store::StoreError> {
                use $crate::store::schedules::{FIRST_FIRE, NEXT_FIRE};
                // A transaction that writes first (SQLite: BEGIN IMMEDIATE), as a claim's.
                let mut tx = self.begin_claim().await?;
                let run_id = run.map(|(row, _)| row.id.as_str());
                let query = sqlx::query(if fire.previous.is_some() {
                    NEXT_FIRE
                } else {
                    FIRST_FIRE
                })
                .bind(&fire.runbook)
                .bind(&fire.expression)
                .bind(fire.at)
                .bind(run_id)
                .bind(&fire.error);
                let query = match fire.previous {
                    Some(previous) => query.bind(previous),
                    None => query,
                };
                let moved = query.execute(&mut *tx).await?.rows_affected() == 1;
                if !moved {
                    tx.rollback().await?;
                    return Ok(false);
                }
                if let Some((row, events)) = run {
                    Self::insert_run(&mut tx, row, events).await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn append(
                &self,
                events: &[$crate::run::event::Record],
                durability: $crate::store::Durability,
            ) -> Result<(), $crate::store::StoreError> {
                if events.is_empty() {
                    return Ok(());
                }
                self.append_durably(events, durability).await
            }

            async fn runs(
                &self,
                limit: i64,
            ) -> Result<Vec<$crate::store::RunRow>, $crate::store::StoreError> {
                sqlx::query_as::<_, $crate::store::StoredRun>(
                    "SELECT * FROM runs ORDER BY started_at DESC, id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map($crate::store::RunRow::try_from)
                .collect()
            }

            async fn run(
                &self,
                id_or_prefix: &str,
            ) -> Result<$crate::store::RunRow, $crate::store::StoreError> {
                use $crate::store::StoreError;
                // Ids are lowercase hex; anything else matches nothing.
                if id_or_prefix.is_empty() || !id_or_prefix.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(StoreError::NoSuchRun(id_or_prefix.to_string()));
                }
                // The ids starting with the prefix, as a range of the primary key: `LIKE 'p%'`
                // uses no index (PostgreSQL's only under the C collation, SQLite's LIKE ignores
                // case), so every lookup read the whole table. `g` sorts after every hex digit.
                let low = id_or_prefix.to_ascii_lowercase();
                let high = format!("{low}g");
                let mut rows = sqlx::query_as::<_, $crate::store::StoredRun>(
                    "SELECT * FROM runs WHERE id >= $1 AND id < $2 ORDER BY started_at LIMIT 2",
                )
                .bind(&low)
                .bind(&high)
                .fetch_all(&self.pool)
                .await?;
                match rows.len() {
                    0 => Err(StoreError::NoSuchRun(id_or_prefix.to_string())),
                    1 => rows.remove(0).try_into(),
                    _ => {
                        let count: i64 = sqlx::query_scalar(
                            "SELECT COUNT(*) FROM runs WHERE id >= $1 AND id < $2",
                        )
                        .bind(&low)
                        .bind(&high)
                        .fetch_one(&self.pool)
                        .await?;
                        Err(StoreError::Ambiguous {
                            prefix: id_or_prefix.to_string(),
                            count: usize::try_from(count).unwrap_or(usize::MAX),
                        })
                    }
                }
            }

            async fn events(
                &self,
                run_id: &str,
            ) -> Result<Vec<$crate::run::event::Record>, $crate::store::StoreError> {
                self.events_page(run_id, -1, i64::MAX).await
            }

            async fn events_page(
                &self,
                run_id: &str,
                after_seq: i64,
                limit: i64,
            ) -> Result<Vec<$crate::run::event::Record>, $crate::store::StoreError> {
                sqlx::query_as::<_, $crate::run::event::Record>($crate::store::keys::EVENTS_AFTER)
                    .bind(run_id)
                    .bind(after_seq)
                    .bind(limit.max(0))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| match e {
                        // Bytes that are not text (SQLite stores what it is given) cannot be an
                        // event this engine wrote: name the run rather than report a database
                        // failure.
                        sqlx::Error::ColumnDecode { index, source } => {
                            $crate::store::StoreError::Corrupt {
                                run: run_id.to_string(),
                                reason: format!("an event's {index} cannot be read: {source}"),
                            }
                        }
                        e => e.into(),
                    })
            }

            async fn trigger_runs(
                &self,
                runbook: &str,
                key: &str,
            ) -> Result<$crate::store::TriggerRuns, $crate::store::StoreError> {
                let active = sqlx::query_scalar($crate::store::keys::ACTIVE_FOR_TRIGGER)
                    .bind(runbook)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                let last_ended = sqlx::query_as($crate::store::keys::LAST_ENDED_FOR_TRIGGER)
                    .bind(runbook)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok($crate::store::TriggerRuns { active, last_ended })
            }

            async fn run_by_request_key(
                &self,
                key: &str,
            ) -> Result<Option<String>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar($crate::store::keys::BY_REQUEST_KEY)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn runs_where(
                &self,
                status: Option<$crate::run::event::RunStatus>,
                runbook: Option<&str>,
                before: Option<(i64, Option<&str>)>,
                limit: i64,
            ) -> Result<Vec<$crate::store::RunRow>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::StoredRun> =
                    sqlx::query_as($crate::store::keys::RUNS_WHERE)
                        .bind(status.map(|s| s.as_str()))
                        .bind(runbook)
                        .bind(before.map(|b| b.0))
                        .bind(before.and_then(|b| b.1))
                        .bind(limit.max(0))
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn count_by_status(
                &self,
            ) -> Result<Vec<(String, i64)>, $crate::store::StoreError> {
                Ok(sqlx::query_as($crate::store::keys::COUNT_BY_STATUS)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn acquire_lease(
                &self,
                run_id: &str,
                holder: &str,
                now: i64,
                expires_at: i64,
                stale: Option<&str>,
            ) -> Result<Option<(String, i64)>, $crate::store::StoreError> {
                let done = sqlx::query($crate::store::ACQUIRE_LEASE)
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
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query($crate::store::RENEW_LEASE)
                    .bind(expires_at)
                    .bind(run_id)
                    .bind(holder)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn release_lease(
                &self,
                run_id: &str,
                holder: &str,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::RELEASE_LEASE)
                    .bind(run_id)
                    .bind(holder)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn answer_approval(
                &self,
                run_id: &str,
                a: &$crate::store::StoredAnswer,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query($crate::store::ANSWER_APPROVAL)
                    .bind(run_id)
                    .bind(&a.answer.step)
                    .bind(i64::from(a.attempt))
                    .bind(a.answer.approve)
                    .bind(&a.answer.by)
                    .bind(&a.answer.how)
                    .bind(&a.answer.comment)
                    .bind(a.at)
                    .execute(&mut *tx)
                    .await?;
                let recorded = done.rows_affected() == 1;
                if recorded {
                    sqlx::query($crate::store::ANSWER_WAKES)
                        .bind(run_id)
                        .bind(a.at)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(recorded)
            }

            async fn approval_answers(
                &self,
                run_id: &str,
            ) -> Result<Vec<$crate::run::driver::Answer>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::AnswerRow> =
                    sqlx::query_as($crate::store::APPROVAL_ANSWERS)
                        .bind(run_id)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn record_request(
                &self,
                run_id: &str,
                request: &$crate::store::RunRequest,
            ) -> Result<(), $crate::store::StoreError> {
                self.record_request_in(run_id, request).await
            }

            async fn run_requests(
                &self,
                run_id: &str,
            ) -> Result<Vec<$crate::store::RunRequest>, $crate::store::StoreError> {
                self.run_requests_in(run_id).await
            }

            async fn lease(
                &self,
                run_id: &str,
            ) -> Result<Option<(String, i64)>, $crate::store::StoreError> {
                Ok(sqlx::query_as($crate::store::GET_LEASE)
                    .bind(run_id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn events_between(
                &self,
                since: i64,
                until: i64,
                after: Option<$crate::store::EventKey<'_>>,
                limit: i64,
            ) -> Result<Vec<$crate::run::event::Record>, $crate::store::StoreError> {
                let after = after.unwrap_or($crate::store::EventKey {
                    at: i64::MIN,
                    run_id: "",
                    seq: i64::MIN,
                });
                Ok(
                    sqlx::query_as::<_, $crate::run::event::Record>($crate::store::EVENTS_BETWEEN)
                        .bind(since)
                        .bind(until)
                        .bind(after.at)
                        .bind(after.run_id)
                        .bind(after.seq)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn claim(
                &self,
                holder: &str,
                now: i64,
                lease_ms: i64,
                limit: i64,
            ) -> Result<Vec<$crate::store::Claimed>, $crate::store::StoreError> {
                self.claim_in(holder, now, lease_ms, limit).await
            }

            async fn lease_holders(
                &self,
                now: i64,
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar($crate::store::claim::LEASE_HOLDERS)
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn expire_leases_of(
                &self,
                holder: &str,
            ) -> Result<u64, $crate::store::StoreError> {
                Ok(sqlx::query($crate::store::claim::EXPIRE_LEASES_OF)
                    .bind(holder)
                    .execute(&self.pool)
                    .await?
                    .rows_affected())
            }

            async fn prune(
                &self,
                finished_before: i64,
                dry_run: bool,
            ) -> Result<$crate::store::Pruned, $crate::store::StoreError> {
                use $crate::store::{
                    PRUNE_ANSWERS, PRUNE_COUNT_EVENTS, PRUNE_COUNT_RUNS, PRUNE_EVENTS,
                    PRUNE_LEASES, PRUNE_REQUESTS, PRUNE_RUNS,
                };
                let mut tx = self.begin_prune().await?;
                if dry_run {
                    let runs: i64 = sqlx::query_scalar(PRUNE_COUNT_RUNS)
                        .bind(finished_before)
                        .fetch_one(&mut *tx)
                        .await?;
                    let events: i64 = sqlx::query_scalar(PRUNE_COUNT_EVENTS)
                        .bind(finished_before)
                        .fetch_one(&mut *tx)
                        .await?;
                    tx.rollback().await?;
                    return Ok($crate::store::Pruned {
                        runs: u64::try_from(runs).unwrap_or(0),
                        events: u64::try_from(events).unwrap_or(0),
                    });
                }
                let deleted_events = sqlx::query(PRUNE_EVENTS)
                    .bind(finished_before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                for also in [PRUNE_LEASES, PRUNE_ANSWERS, PRUNE_REQUESTS] {
                    sqlx::query(also)
                        .bind(finished_before)
                        .execute(&mut *tx)
                        .await?;
                }
                let deleted_runs = sqlx::query(PRUNE_RUNS)
                    .bind(finished_before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok($crate::store::Pruned {
                    runs: deleted_runs,
                    events: deleted_events,
                })
            }
        }
    };
}

pub(crate) use shared_body;
