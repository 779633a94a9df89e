//! Requests left for a run by other processes (the store's `run_requests` inbox: cancels, notes):
//! what the journal says of each, as pure functions of the plan and the state, and how the driver
//! holding the run takes them. A request is taken once: the event that takes it names its id, and
//! the fold remembers the ids ([`RunState::taken`]).

use super::driver::{Driver, DriverError};
use super::event::{Event, RunStatus};
use super::state::{RunState, Status};
use crate::runbook::plan::Plan;
use crate::store::{Asked, Durability, RunRequest};
use runbook_steps::{ErrorKind, SideEffect};

/// A cancel the run accepts: who asked, through what, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Cancelled {
    pub request: String,
    pub by: String,
    pub how: String,
    pub reason: String,
    pub only_before_changes: bool,
}

/// What taking a request comes to, before anything is stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Journal this (a note, a refused cancel); the run goes on.
    Journal(Event),
    /// Cancel the run: stop what runs, then journal the [`cancellation`] of the state that leaves.
    Cancel(Cancelled),
}

/// What request `r` comes to for the run as it stands.
pub fn verdict(plan: &Plan, state: &RunState, r: &RunRequest) -> Verdict {
    match &r.asked {
        Asked::Note(note) => Verdict::Journal(Event::RunNoted {
            request: r.id.clone(),
            by: r.by.clone(),
            how: r.how.clone(),
            note: note.clone(),
        }),
        Asked::Cancel {
            reason,
            only_before_changes,
        } => match refusal(plan, state, *only_before_changes) {
            Some(why) => Verdict::Journal(Event::CancelRefused {
                request: r.id.clone(),
                by: r.by.clone(),
                how: r.how.clone(),
                reason: reason.clone(),
                why,
            }),
            None => Verdict::Cancel(Cancelled {
                request: r.id.clone(),
                by: r.by.clone(),
                how: r.how.clone(),
                reason: reason.clone(),
                only_before_changes: *only_before_changes,
            }),
        },
    }
}

/// Why a cancel must be refused, if it must: it asked to cancel only before any change, and a step
/// with side effects has started.
pub fn refusal(plan: &Plan, state: &RunState, only_before_changes: bool) -> Option<String> {
    if !only_before_changes {
        return None;
    }
    let i = state.acted?;
    let class = state.steps[i].class.unwrap_or(SideEffect::Unsafe);
    Some(format!(
        "step `{}` ({}) has started: the run is changing things, and this cancel asked to stop it \
         only before any change",
        plan.id(i),
        class.as_str()
    ))
}

/// What a cancellation journals, in one commit: the cancel; each step in flight (or left `unknown`
/// after a crash) failed with kind `cancelled`, saying what its class leaves open; each step waiting
/// for approval denied; each retry given up; and the run's end, `failed`.
pub fn cancellation(plan: &Plan, state: &RunState, c: &Cancelled) -> Vec<Event> {
    let who = format!("cancelled by {} ({})", c.by, c.how);
    let why = &c.reason;
    let mut events = vec![Event::RunCancelled {
        request: c.request.clone(),
        by: c.by.clone(),
        how: c.how.clone(),
        reason: c.reason.clone(),
        only_before_changes: c.only_before_changes,
    }];
    for &i in &plan.order {
        let st = &state.steps[i];
        let step = plan.id(i).to_string();
        let failed = |error: String| Event::StepFailed {
            step: step.clone(),
            attempt: st.attempt,
            kind: ErrorKind::Cancelled,
            error,
            detail: None,
            retry_at_ms: None,
        };
        match st.status {
            Status::Running => {
                let effect = match st.class.unwrap_or(SideEffect::Unsafe) {
                    SideEffect::Read => "",
                    SideEffect::Idempotent => {
                        " and may have acted (it is idempotent: running it again is safe)"
                    }
                    SideEffect::Unsafe => {
                        ": it is unsafe and may or may not have acted, its effect is unknown"
                    }
                };
                events.push(failed(format!(
                    "the run was {who} while this step ran: {why}; the step was stopped{effect}"
                )));
            }
            Status::Unknown => events.push(failed(format!(
                "the run was {who} while this step's outcome was unknown (it was in flight when \
                 the run stopped): {why}; it is unsafe and may or may not have acted, its effect is \
                 unknown"
            ))),
            Status::RetryWait => {
                let before = st.error.as_ref().map_or("", |(_, e)| e.as_str());
                events.push(failed(format!(
                    "the run was {who} before this step's retry: {why} (attempt {} had failed: \
                     {before})",
                    st.attempt
                )));
            }
            Status::AwaitingApproval => events.push(Event::ApprovalDenied {
                step,
                by: c.by.clone(),
                how: c.how.clone(),
                reason: format!("the run was cancelled: {}", c.reason),
            }),
            _ => {}
        }
    }
    events.push(Event::RunFinished {
        status: RunStatus::Failed,
        error: Some(format!("{who}: {why}")),
    });
    events
}

/// The requests in `all` the journal has not taken yet, oldest first.
pub fn untaken(state: &RunState, all: Vec<RunRequest>) -> Vec<RunRequest> {
    all.into_iter()
        .filter(|r| !state.taken.contains(&r.id))
        .collect()
}

impl Driver {
    /// Journals the requests left for the run that its journal has not taken. `Some` when one
    /// cancelled it: what ran is stopped and the run has ended.
    pub(super) async fn take_requests(&mut self) -> Result<Option<RunStatus>, DriverError> {
        if self.opts.plan {
            return Ok(None);
        }
        let all = self.store.run_requests(&self.chain.run_id).await?;
        for r in untaken(&self.state, all) {
            match verdict(&self.plan, &self.state, &r) {
                Verdict::Journal(e) => self.emit(e),
                Verdict::Cancel(c) => {
                    self.stop_steps().await;
                    for e in cancellation(&self.plan, &self.state, &c) {
                        self.emit(e);
                    }
                    self.flush(Durability::Power).await?;
                    return Ok(Some(RunStatus::Failed));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
