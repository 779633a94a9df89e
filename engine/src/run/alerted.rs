//! Starting runs from alerts: what `runbook serve`'s webhook does with [`crate::trigger::route`]'s
//! answer. At most one unfinished run per (runbook, alert key) — the database's unique index is the
//! judge, so two servers receiving the same notification start one run — and, after a run of a key
//! ends, nothing more for the runbook's `cooldown`.

use super::driver::{DriverError, RunOptions};
use super::enqueue::{Queued, enqueue};
use crate::runbook::catalog::Entry;
use crate::runbook::params::{Given, bind};
use crate::store::{Store, StoreError};
use crate::trigger::{AlertStatus, Notification, Routed};
use serde::Serialize;

/// What one routed alert did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A run was queued; the first free worker drives it.
    Started { runbook: String, run: String },
    /// An unfinished run of this key exists (Alertmanager re-sent the alert, or another server took
    /// it first): nothing new.
    Deduplicated { runbook: String, run: String },
    /// The last run of this key ended less than the runbook's `cooldown` ago.
    CoolingDown {
        runbook: String,
        run: String,
        until_ms: i64,
    },
    /// A `resolved` alert; `run` is the unfinished run of its key, if there is one.
    Resolved {
        runbook: String,
        run: Option<String>,
    },
    /// The runbook cannot take this alert (a parameter the labels fill is refused, a connection
    /// cannot be resolved): journaled nowhere, answered and logged.
    Refused { runbook: String, reason: String },
}

impl Outcome {
    /// The word `/metrics` counts alerts by.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Started { .. } => "started",
            Outcome::Deduplicated { .. } => "deduplicated",
            Outcome::CoolingDown { .. } => "cooling_down",
            Outcome::Resolved { .. } => "resolved",
            Outcome::Refused { .. } => "refused",
        }
    }
}

/// Acts on one routed alert of `n` for `entry` (the runbook it names) at `now`.
pub async fn act(
    store: &dyn Store,
    engine: &crate::Engine,
    entry: &Entry,
    n: &Notification,
    r: &Routed,
    opts: &RunOptions,
    now: i64,
) -> Result<Outcome, StoreError> {
    let runbook = entry.name().to_string();
    let seen = store.trigger_runs(&runbook, &r.key).await?;
    if r.status == AlertStatus::Resolved {
        return Ok(Outcome::Resolved {
            runbook,
            run: seen.active,
        });
    }
    if let Some(run) = seen.active {
        return Ok(Outcome::Deduplicated { runbook, run });
    }
    if let (Some(cooldown), Some((run, ended))) =
        (entry.plan.runbook.trigger.cooldown, seen.last_ended)
    {
        let ms = i64::try_from(cooldown.as_millis()).unwrap_or(i64::MAX);
        let until_ms = ended.saturating_add(ms);
        if now < until_ms {
            return Ok(Outcome::CoolingDown {
                runbook,
                run,
                until_ms,
            });
        }
    }
    let params = match bind(&entry.plan.runbook, r.params.clone(), Given::Json) {
        Ok(p) => p,
        Err(errors) => {
            return Ok(Outcome::Refused {
                runbook,
                reason: errors.join("; "),
            });
        }
    };
    let queued = Queued {
        trigger: Some(n.trigger(r)),
        trigger_key: Some(r.key.clone()),
        request_key: None,
    };
    match enqueue(
        std::sync::Arc::clone(&entry.plan),
        store,
        engine,
        entry.source(),
        params,
        opts,
        queued,
    )
    .await
    {
        Ok(run) => Ok(Outcome::Started { runbook, run }),
        // Another server (or a concurrent request) started it between the look and the insert.
        Err(DriverError::Store(StoreError::Duplicate(_))) => {
            match store.trigger_runs(&runbook, &r.key).await?.active {
                Some(run) => Ok(Outcome::Deduplicated { runbook, run }),
                // It ended in between: too quick to matter, and starting another would defeat the
                // cooldown; report it as what happened.
                None => Ok(Outcome::Refused {
                    runbook,
                    reason: "a run for this alert started and ended while this one was checked"
                        .to_string(),
                }),
            }
        }
        Err(DriverError::Store(e)) => Err(e),
        Err(e) => Ok(Outcome::Refused {
            runbook,
            reason: e.to_string(),
        }),
    }
}
