//! Queuing a run for workers instead of driving it here: what `runbook run --queue`, and a server's
//! webhook and API, do. The run is created parked and due now, so the first free worker claims it.

use super::driver::{DriverError, RunOptions};
use super::event::{Event, Record, RunStatus, Trigger, now_ms};
use super::launch::{Source, new_run, opening};
use crate::runbook::plan::Plan;
use crate::store::{RunRow, Store};
use serde_json::{Map, Value};
use std::sync::Arc;

/// What a queued run carries besides its parameters: what started it, and the keys that make
/// starting it idempotent (see migration 0007).
#[derive(Debug, Clone, Default)]
pub struct Queued {
    pub trigger: Option<Trigger>,
    /// At most one unfinished run per runbook and trigger key: a second is `StoreError::Duplicate`.
    pub trigger_key: Option<String>,
    /// An API client's Idempotency-Key under its name: a second run with it is `Duplicate`.
    pub request_key: Option<String>,
}

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
    queued: Queued,
) -> Result<String, DriverError> {
    let (row, records) = prepare(plan, engine, source, params, opts, queued)?;
    store.create_run(&row, &records).await?;
    Ok(row.id)
}

/// The row and first events of a queued run, not yet written: for a caller that writes them in a
/// transaction of its own (a schedule's fire, with the compare-and-set that claims it).
pub(crate) fn prepare(
    plan: Arc<Plan>,
    engine: &crate::Engine,
    source: Source,
    params: Map<String, Value>,
    opts: &RunOptions,
    queued: Queued,
) -> Result<(RunRow, Vec<Record>), DriverError> {
    if opts.plan {
        return Err(DriverError::Refused(
            "a plan is not queued: it runs where it is asked for (`runbook plan`)".to_string(),
        ));
    }
    let mut new = new_run(plan, engine, source, params, opts)?;
    let mut events = Vec::new();
    if let Some(trigger) = queued.trigger {
        events.push(Event::RunTriggered { trigger });
    }
    events.extend(opening(new.resolved, new.profile, new.rerun));
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
    new.row.trigger_key = queued.trigger_key;
    new.row.request_key = queued.request_key;
    Ok((new.row, records))
}
