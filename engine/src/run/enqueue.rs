//! Queuing a run for workers instead of driving it here: what `runbook run --queue`, and a server's
//! webhook and API, do. The run is created parked and due now, so the first free worker claims it.

use super::driver::{DriverError, RunOptions};
use super::event::{Event, RunStatus, now_ms};
use super::launch::{Source, new_run, opening};
use crate::runbook::plan::Plan;
use crate::store::Store;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Records a new run of `plan` with checked `params` — `run_started`, the connections it resolved,
/// and `run_detached` due now — in one transaction, and returns its id without driving it. What
/// would stop `start` before anything is recorded (a connection without a required field, a var
/// that does not render) stops this too.
pub async fn enqueue(
    plan: Arc<Plan>,
    store: &dyn Store,
    engine: &crate::Engine,
    source: Source,
    params: Map<String, Value>,
    opts: &RunOptions,
) -> Result<String, DriverError> {
    if opts.plan {
        return Err(DriverError::Refused(
            "a plan is not queued: it runs where it is asked for (`runbook plan`)".to_string(),
        ));
    }
    let mut new = new_run(plan, engine, source, params, opts)?;
    let mut events = opening(new.resolved, new.profile, new.rerun);
    events.push(Event::RunDetached {
        wake_at_ms: Some(now_ms()),
        approvals: Vec::new(),
    });
    let mut records = vec![new.first];
    for mut e in events {
        new.at.redactor.event(&mut e);
        records.push(new.at.chain.seal(now_ms(), &opts.actor, &e));
    }
    new.row.status = RunStatus::Parked;
    store.create_run(&new.row, &records).await?;
    Ok(new.row.id)
}
