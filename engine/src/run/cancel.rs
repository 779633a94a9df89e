//! Cancelling a run, and telling it things, from outside the process that drives it (`runbook
//! cancel`, the HTTP API, the Alertmanager webhook). A request is checked against the run's row and
//! left in the store's inbox, which wakes a parked run; whoever holds the run journals it: the
//! process driving it (within a second), a worker that claims it, or — when no process drives it —
//! the caller, taking the run over ([`take_over`]). The journal keeps one writer at a time.

use super::driver::DriverError;
use super::event::{Event, Note, RunStatus, now_ms};
use super::launch::{STOP_GRACE, StoredRun};
use super::lease::{self, Holder, LeaseError};
use super::requests::{Verdict, cancellation, untaken, verdict};
use super::state::{RunState, Status};
use crate::runbook::model::OnResolved;
use crate::runbook::plan::Plan;
use crate::store::{Asked, Durability, RunKind, RunRequest, Store};
use serde::Serialize;
use std::time::Duration;

/// A cancel request: who asks, through what, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancel {
    pub by: String,
    /// `cli`, `api`, `alertmanager`.
    pub how: String,
    pub reason: String,
    /// Cancel only while nothing but `read` steps has started (what `triggers.on_resolved: cancel`
    /// sends); otherwise the run journals the refusal, naming the step that acted, and goes on.
    pub only_before_changes: bool,
}

/// A request recorded for a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Requested {
    pub run_id: String,
    /// The request's id, which the event that takes it names.
    pub request: String,
    /// The run's status when the request was recorded.
    pub status: RunStatus,
    /// Whether a live process drives the run now, and so takes the request within a second. When
    /// none does, a parked run is due at once for a worker; any other waits for whoever continues
    /// it, or for [`take_over`] (what [`settle`] does).
    pub driven: bool,
}

/// What became of a request, as the run's journal says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The run was cancelled: it has ended `failed`.
    Cancelled,
    /// The run refused the cancel and goes on.
    Refused { why: String },
    /// The note is journaled.
    Noted,
    /// Not journaled yet: the process driving the run takes it (`driven`), or whoever continues
    /// the run.
    Pending { driven: bool },
    /// The run ended before anything took the request.
    Ended { status: RunStatus },
}

/// How often [`settle`] looks at the journal while another process holds the run.
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// Records a request to cancel run `run` (an id or unique prefix). Refused, with nothing recorded,
/// when the run has ended, is a plan, or no reason is given.
pub async fn request(store: &dyn Store, run: &str, c: &Cancel) -> Result<Requested, DriverError> {
    if c.reason.trim().is_empty() {
        return Err(DriverError::Refused(
            "a cancel needs a reason: it is journaled for whoever reviews the run".to_string(),
        ));
    }
    let asked = Asked::Cancel {
        reason: c.reason.clone(),
        only_before_changes: c.only_before_changes,
    };
    record(store, run, &c.by, &c.how, asked).await
}

/// Records a note for run `run` (an id or unique prefix): an alert notification about it, to be
/// journaled (`run_noted`) by whoever holds the run. Refused, with nothing recorded, when the run
/// has ended or is a plan.
pub async fn note(
    store: &dyn Store,
    run: &str,
    by: &str,
    how: &str,
    note: Note,
) -> Result<Requested, DriverError> {
    record(store, run, by, how, Asked::Note(note)).await
}

/// What a `resolved` alert does to the unfinished run of its key (`run`): the note is recorded and,
/// when the runbook says `on_resolved: cancel`, a cancel that stops the run only if it has changed
/// nothing yet (`only_before_changes`). Whoever holds the run journals them, in that order.
pub async fn resolved(
    store: &dyn Store,
    run: &str,
    on_resolved: OnResolved,
    alert: Note,
) -> Result<Vec<Requested>, DriverError> {
    const BY: &str = "alertmanager";
    let reason = alert.summary.clone();
    let mut done = vec![note(store, run, BY, BY, alert).await?];
    if on_resolved == OnResolved::Cancel {
        let c = Cancel {
            by: BY.to_string(),
            how: BY.to_string(),
            reason,
            only_before_changes: true,
        };
        done.push(request(store, run, &c).await?);
    }
    Ok(done)
}

async fn record(
    store: &dyn Store,
    run: &str,
    by: &str,
    how: &str,
    asked: Asked,
) -> Result<Requested, DriverError> {
    let row = store.run(run).await?;
    let what = match asked {
        Asked::Cancel { .. } => "cancel",
        Asked::Note(_) => "note",
    };
    if row.kind == RunKind::Plan {
        return Err(DriverError::Refused(format!(
            "run {} is a plan: it changes nothing and takes no {what}; stop it with Ctrl-C where it runs",
            row.id
        )));
    }
    if matches!(row.status, RunStatus::Succeeded | RunStatus::Failed) {
        return Err(DriverError::Refused(format!(
            "run {} already {}: there is nothing to {what}",
            row.id, row.status
        )));
    }
    let r = RunRequest {
        id: uuid::Uuid::now_v7().simple().to_string(),
        by: by.to_string(),
        how: how.to_string(),
        at: now_ms(),
        asked,
    };
    store.record_request(&row.id, &r).await?;
    let driven = lease::driven(store, &row.id).await?;
    Ok(Requested {
        run_id: row.id,
        request: r.id,
        status: row.status,
        driven,
    })
}

/// Journals, here and now, the requests left for run `run` that its journal has not taken, holding
/// the run's lease meanwhile: what to do when no live process drives the run (parked with no
/// worker, interrupted, waiting for an operator, or left by a process that died). A cancel also
/// stops commands the run's steps left running. The run is not otherwise continued: a note leaves it
/// as it was. Returns the run's status after, or `None` when another process holds the run (and
/// takes the requests itself).
pub async fn take_over(
    store: &dyn Store,
    engine: &crate::Engine,
    run: &str,
    actor: &str,
) -> Result<Option<RunStatus>, DriverError> {
    let row = store.run(run).await?;
    if matches!(row.status, RunStatus::Succeeded | RunStatus::Failed) {
        return Ok(Some(row.status));
    }
    let me = Holder::this_process();
    match lease::take(store, &row.id, &me).await {
        Ok(()) => {}
        Err(LeaseError::Held { .. }) => return Ok(None),
        Err(LeaseError::Store(e)) => return Err(e.into()),
    }
    let result = journal_requests(store, engine, &row.id, actor).await;
    // A lease left behind only delays the next driver until it expires.
    let _ = store.release_lease(&row.id, &me.encode()).await;
    result.map(Some)
}

/// The body of [`take_over`], with the lease held: the journal is read only now, so nothing a
/// previous holder appended is missed.
async fn journal_requests(
    store: &dyn Store,
    engine: &crate::Engine,
    run_id: &str,
    actor: &str,
) -> Result<RunStatus, DriverError> {
    let stored = StoredRun::load(store, run_id, true).await?;
    if matches!(stored.row.status, RunStatus::Succeeded | RunStatus::Failed) {
        return Ok(stored.row.status);
    }
    let plan = stored.check(engine)
    .map_err(|r| {
        DriverError::Refused(format!(
            "the runbook of run {run_id} does not validate, so its requests cannot be taken here:\n{}",
            r.render(false)
        ))
    })?;
    let mut state = RunState::fold(&plan, &stored.events);
    let mut events = Vec::new();
    for r in untaken(&state, store.run_requests(run_id).await?) {
        let taken = match verdict(&plan, &state, &r) {
            Verdict::Journal(e) => vec![e],
            Verdict::Cancel(c) => {
                let mut all = cancellation(&plan, &state, &c);
                let found = stop_left_running(&plan, &state, &stored).await;
                all.splice(1..1, found);
                all
            }
        };
        for e in taken {
            state.apply(&plan, &e);
            events.push(e);
        }
        if matches!(state.status, RunStatus::Failed) {
            break;
        }
    }
    if events.is_empty() {
        return Ok(state.status);
    }
    let connections = stored.connections().cloned().map(serde_json::Value::Object);
    let redactor = super::redact::Redactor::new(connections.as_ref());
    let mut chain = stored.chain();
    let now = now_ms();
    let records: Vec<_> = events
        .into_iter()
        .map(|mut e| {
            redactor.event(&mut e);
            chain.seal(now, actor, &e)
        })
        .collect();
    store.append(&records, Durability::Power).await?;
    Ok(state.status)
}

/// Stops the commands that steps in flight when the run stopped (killed with its process) left
/// running, and says so: a cancelled run leaves nothing working.
async fn stop_left_running(plan: &Plan, state: &RunState, stored: &StoredRun) -> Vec<Event> {
    let mut found = Vec::new();
    for (i, st) in state.steps.iter().enumerate() {
        if !matches!(st.status, Status::Running | Status::Unknown) {
            continue;
        }
        let Some(group) = stored.process_left(plan.id(i), st.attempt) else {
            continue;
        };
        let how = group.stop(STOP_GRACE).await.to_string();
        found.push(Event::ProcessFound {
            step: plan.id(i).to_string(),
            group,
            action: "cancelled".to_string(),
            how: Some(how),
        });
    }
    found
}

/// What the journal says of request `request`, if it has taken it.
fn taken_as(event: &Event, request: &str) -> Option<Outcome> {
    match event {
        Event::RunCancelled { request: r, .. } if r == request => Some(Outcome::Cancelled),
        Event::CancelRefused {
            request: r, why, ..
        } if r == request => Some(Outcome::Refused { why: why.clone() }),
        Event::RunNoted { request: r, .. } if r == request => Some(Outcome::Noted),
        _ => None,
    }
}

/// Sees a recorded request through: when no live process drives the run, takes the run over and
/// journals the request here; otherwise waits up to `wait` for the driving process to journal it
/// (and takes over if that process lets the run go first). Returns what the journal says.
pub async fn settle(
    store: &dyn Store,
    engine: &crate::Engine,
    r: &Requested,
    actor: &str,
    wait: Duration,
) -> Result<Outcome, DriverError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut seen = -1;
    let mut took_over = false;
    loop {
        // Read before the row: a run seen ended was read to its end first.
        let mut ended = None;
        for attempt in 0..2 {
            for rec in store.events_page(&r.run_id, seen, i64::MAX).await? {
                seen = rec.seq;
                if let Some(o) = rec.event().ok().and_then(|e| taken_as(&e, &r.request)) {
                    return Ok(o);
                }
            }
            let status = store.run(&r.run_id).await?.status;
            if attempt == 0 && matches!(status, RunStatus::Succeeded | RunStatus::Failed) {
                ended = Some(status);
                continue;
            }
            break;
        }
        if let Some(status) = ended {
            return Ok(Outcome::Ended { status });
        }
        let driven = lease::driven(store, &r.run_id).await?;
        // One take-over journals every request left; a second would find nothing more.
        if !driven && !took_over && take_over(store, engine, &r.run_id, actor).await?.is_some() {
            took_over = true;
            continue;
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Outcome::Pending { driven });
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}
