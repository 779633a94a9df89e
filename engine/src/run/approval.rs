//! Answering a step's approval request from outside the process that drives the run: checked against
//! the journal and the step's policy, then left in the store's answer inbox, which the driver holding
//! the run (now, or the next one to resume it) journals. The journal has one writer at a time.

use super::driver::{Answer, DriverError};
use super::event::{RunStatus, now_ms};
use super::state::{RunState, Status};
use crate::store::{Store, StoredAnswer};

/// What became of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub run_id: String,
    /// False when another answer to the same request came first.
    pub recorded: bool,
    /// The run's status: `parked` runs go on only when something resumes them.
    pub status: RunStatus,
    /// Whether a live process drives the run now (and so takes the answer by itself).
    pub driven: bool,
}

/// Records `answer` for run `run` (an id or unique prefix) if its step is waiting for approval and
/// `answer.by` may give it.
pub async fn answer(
    store: &dyn Store,
    engine: &crate::Engine,
    run: &str,
    answer: Answer,
) -> Result<Answered, DriverError> {
    let stored = super::launch::StoredRun::load(store, run, false).await?;
    let plan = stored.check(engine).map_err(|r| {
        DriverError::Refused(format!(
            "the runbook of run {} does not validate:\n{}",
            stored.row.id,
            r.render(false)
        ))
    })?;
    let (row, events) = (&stored.row, &stored.events);
    let state = RunState::fold(&plan, events);
    let Some(&i) = plan.index.get(&answer.step) else {
        let hint = crate::diag::suggest(&answer.step, plan.index.keys().map(String::as_str))
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return Err(DriverError::Refused(format!(
            "run {} has no step `{}`{hint}",
            row.id, answer.step
        )));
    };
    let st = &state.steps[i];
    let waiting: Vec<&str> = state
        .approvals
        .iter()
        .map(|&r| plan.id(plan.order[r]))
        .collect();
    if st.status != Status::AwaitingApproval {
        let also = if waiting.is_empty() {
            String::new()
        } else {
            format!(" (waiting for approval: {})", waiting.join(", "))
        };
        return Err(DriverError::Refused(format!(
            "step `{}` of run {} is not waiting for approval: it is {}{also}",
            answer.step,
            row.id,
            st.status.as_str()
        )));
    }
    if matches!(state.status, RunStatus::Succeeded | RunStatus::Failed) {
        return Err(DriverError::Refused(format!(
            "run {} already {}",
            row.id,
            state.status.as_str()
        )));
    }
    plan.steps[i]
        .def
        .approval_policy
        .may_answer(&answer.by, &row.actor)
        .map_err(DriverError::Refused)?;
    let attempt = st.approval.requested_for.unwrap_or(st.attempt + 1);
    let answer = StoredAnswer {
        answer: Answer {
            attempt: Some(attempt),
            ..answer
        },
        attempt,
        at: now_ms(),
    };
    let recorded = store.answer_approval(&row.id, &answer).await?;
    let driven = super::lease::driven(store, &row.id).await?;
    Ok(Answered {
        run_id: row.id.clone(),
        recorded,
        status: state.status,
        driven,
    })
}
