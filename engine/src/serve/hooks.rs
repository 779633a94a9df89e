//! `POST /hooks/alertmanager`: an Alertmanager webhook notification (payload version 4) in, runs
//! queued out. The notification is answered as soon as each alert's run is journaled (or found to
//! exist already); workers drive the runs.

use super::AppState;
use super::api::{Authed, require};
use super::auth::Role;
use super::error::ApiError;
use crate::run::alerted::{self, Outcome};
use crate::run::cancel;
use crate::run::driver::DriverError;
use crate::run::event::now_ms;
use crate::run::options::RunOptions;
use crate::trigger;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::Serialize;

/// The largest notification read: Alertmanager's own cap on a group is far below this; a bigger
/// body is not a notification.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HookAnswer {
    /// What each (alert, runbook) pair did.
    #[schema(value_type = Vec<Object>)]
    pub outcomes: Vec<Outcome>,
    /// Alerts no served runbook answers (by `triggers.alerts` and `triggers.labels`).
    pub unmatched: usize,
}

/// Receives an Alertmanager notification.
#[utoipa::path(
    post,
    path = "/hooks/alertmanager",
    tag = "alerts",
    request_body(content = Object, description = "Alertmanager webhook payload, version 4", content_type = "application/json"),
    responses(
        (status = 200, description = "Every alert acted on", body = HookAnswer),
        (status = 401, description = "No valid token", body = super::error::ErrorBody),
        (status = 403, description = "The token is not an operator's", body = super::error::ErrorBody),
        (status = 422, description = "Not a version 4 notification", body = super::error::ErrorBody),
        (status = 503, description = "The database failed", body = super::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn alertmanager(
    State(s): State<AppState>,
    Authed(caller): Authed,
    body: Bytes,
) -> Result<Json<HookAnswer>, ApiError> {
    require(&caller, Role::Operator)?;
    let n = trigger::parse(&body).map_err(|e| ApiError::invalid(e.to_string()))?;
    let runbooks: Vec<&crate::runbook::Runbook> =
        s.catalog.entries.iter().map(|e| &*e.plan.runbook).collect();
    let (routed, refused) = trigger::route(&n, &runbooks);
    let mut outcomes = Vec::new();
    for r in refused {
        tracing::warn!(runbook = %r.runbook, fingerprint = %r.fingerprint, reason = %r.reason, "alert refused");
        s.metrics.alert("refused", &r.runbook);
        outcomes.push(Outcome::Refused {
            runbook: r.runbook,
            reason: r.reason,
        });
    }
    let matched: std::collections::BTreeSet<usize> = routed.iter().map(|r| r.alert).collect();
    let unmatched = n.alerts.len() - matched.len();
    for _ in 0..unmatched {
        s.metrics.alert("unmatched", "");
    }
    let mut opts = RunOptions::new(&format!("alertmanager:{}", caller.subject));
    opts.profile = s.profile.clone();
    for r in &routed {
        let Some(entry) = s.catalog.get(&r.runbook) else {
            continue;
        };
        let outcome =
            alerted::act(s.store.as_ref(), &s.engine, entry, &n, r, &opts, now_ms()).await?;
        s.metrics.alert(outcome.word(), &r.runbook);
        if matches!(outcome, Outcome::Started { .. }) {
            s.made_due();
        }
        if let Outcome::Resolved { run: Some(run), .. } = &outcome {
            // Journaled on the run by whoever holds it (and a cancel, if the runbook asks for one
            // while the run has changed nothing).
            let on = entry.plan.runbook.trigger.on_resolved;
            match cancel::resolved(s.store.as_ref(), run, on, n.note(r)).await {
                Ok(_) => s.made_due(),
                // It ended between the look and the note: nothing left to tell.
                Err(DriverError::Refused(why)) => {
                    tracing::debug!(%run, %why, "resolved alert not noted")
                }
                Err(e) => return Err(e.into()),
            }
        }
        match &outcome {
            Outcome::Started { run, .. } => {
                tracing::info!(runbook = %r.runbook, %run, key = %r.key, "alert started a run")
            }
            Outcome::Refused { reason, .. } => {
                tracing::warn!(runbook = %r.runbook, key = %r.key, %reason, "alert refused")
            }
            o => {
                tracing::debug!(runbook = %r.runbook, key = %r.key, outcome = o.word(), "alert")
            }
        }
        outcomes.push(outcome);
    }
    Ok(Json(HookAnswer {
        outcomes,
        unmatched,
    }))
}
