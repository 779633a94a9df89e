//! The request inbox of a run: cancel requests and notes left by any process (`runbook cancel`, the
//! HTTP API, the Alertmanager webhook) for the driver that holds the run, which journals each one
//! once. The same SQL on both backends (migration 0008).

use crate::run::event::Note;
use serde::{Deserialize, Serialize};

/// A request to a run from outside the process that drives it, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRequest {
    /// A UUIDv7. The event that takes the request names it, so a request is journaled once.
    pub id: String,
    pub by: String,
    /// Through what: `cli`, `api`, `alertmanager`.
    pub how: String,
    pub at: i64,
    pub asked: Asked,
}

/// What a request asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Asked {
    /// Stop the run: what runs is stopped, nothing more starts, the run ends `failed`.
    Cancel {
        reason: String,
        /// Only while no step other than a `read` one has started (what `on_resolved: cancel`
        /// sends); otherwise the refusal is journaled and the run goes on.
        #[serde(default)]
        only_before_changes: bool,
    },
    /// Tell the run something (an alert notification about it), to be journaled.
    Note(Note),
}

impl Asked {
    /// The `kind` column.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Asked::Cancel { .. } => "cancel",
            Asked::Note(_) => "note",
        }
    }

    /// The `body` column: the request's content as JSON text.
    pub(crate) fn body(&self) -> String {
        let v = match self {
            Asked::Cancel {
                reason,
                only_before_changes,
            } => serde_json::json!({"reason": reason, "only_before_changes": only_before_changes}),
            Asked::Note(n) => serde_json::to_value(n).unwrap_or_default(),
        };
        v.to_string()
    }

    fn decode(kind: &str, body: &str) -> Result<Asked, String> {
        let bad = |e: serde_json::Error| format!("its {kind} request's body is unreadable: {e}");
        match kind {
            "cancel" => {
                #[derive(Deserialize)]
                struct Cancel {
                    reason: String,
                    #[serde(default)]
                    only_before_changes: bool,
                }
                let c: Cancel = serde_json::from_str(body).map_err(bad)?;
                Ok(Asked::Cancel {
                    reason: c.reason,
                    only_before_changes: c.only_before_changes,
                })
            }
            "note" => serde_json::from_str(body).map(Asked::Note).map_err(bad),
            other => Err(format!("it has a request of unknown kind `{other}`")),
        }
    }
}

/// A `run_requests` row as both stores hold it.
#[derive(sqlx::FromRow)]
pub(crate) struct RequestRow {
    id: String,
    kind: String,
    requested_by: String,
    how: String,
    body: String,
    at: i64,
}

impl RequestRow {
    /// A row this engine did not write (or a newer one did) is an error naming the run.
    pub(crate) fn decode(self, run_id: &str) -> Result<RunRequest, super::StoreError> {
        let asked =
            Asked::decode(&self.kind, &self.body).map_err(|reason| super::StoreError::Corrupt {
                run: run_id.to_string(),
                reason,
            })?;
        Ok(RunRequest {
            id: self.id,
            by: self.requested_by,
            how: self.how,
            at: self.at,
            asked,
        })
    }
}

pub(crate) const RECORD_REQUEST: &str =
    "INSERT INTO run_requests (run_id, id, kind, requested_by, how, body, at)
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// A run's requests, oldest first (ids break ties: UUIDv7s of one clock sort by time).
pub(crate) const RUN_REQUESTS: &str = "SELECT id, kind, requested_by, how, body, at
     FROM run_requests WHERE run_id = $1 ORDER BY at, id";

/// The inbox's part of `shared_body!`: recording a request wakes the run in the same transaction.
macro_rules! requests_body {
    () => {
        async fn record_request_in(
            &self,
            run_id: &str,
            r: &$crate::store::RunRequest,
        ) -> Result<(), $crate::store::StoreError> {
            let mut tx = self.pool.begin().await?;
            sqlx::query($crate::store::requests::RECORD_REQUEST)
                .bind(run_id)
                .bind(&r.id)
                .bind(r.asked.kind())
                .bind(&r.by)
                .bind(&r.how)
                .bind(r.asked.body())
                .bind(r.at)
                .execute(&mut *tx)
                .await?;
            sqlx::query($crate::store::ANSWER_WAKES)
                .bind(run_id)
                .bind(r.at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }

        async fn run_requests_in(
            &self,
            run_id: &str,
        ) -> Result<Vec<$crate::store::RunRequest>, $crate::store::StoreError> {
            let rows: Vec<$crate::store::requests::RequestRow> =
                sqlx::query_as($crate::store::requests::RUN_REQUESTS)
                    .bind(run_id)
                    .fetch_all(&self.pool)
                    .await?;
            rows.into_iter().map(|r| r.decode(run_id)).collect()
        }
    };
}

pub(crate) use requests_body;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_their_columns_and_odd_rows_name_the_cause() {
        let asked = [
            Asked::Cancel {
                reason: "wrong alert".into(),
                only_before_changes: true,
            },
            Asked::Note(Note {
                source: "alertmanager".into(),
                status: "resolved".into(),
                summary: "alert X resolved".into(),
                detail: serde_json::json!({"labels": {"a": "b"}}),
            }),
        ];
        for a in asked {
            assert_eq!(Asked::decode(a.kind(), &a.body()), Ok(a));
        }
        // Written by an older engine without the flag: an unconditional cancel.
        assert_eq!(
            Asked::decode("cancel", r#"{"reason":"r"}"#),
            Ok(Asked::Cancel {
                reason: "r".into(),
                only_before_changes: false
            })
        );
        let e = Asked::decode("pause", "{}").expect_err("unknown kind");
        assert!(e.contains("`pause`"), "{e}");
        let e = Asked::decode("cancel", "{").expect_err("not JSON");
        assert!(e.contains("cancel request"), "{e}");
    }
}
