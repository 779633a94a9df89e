//! What to do next: a pure function of the plan and the state. No I/O, no clock (the time is an
//! argument), so every scheduling rule is unit-tested on data.

use super::event::RunStatus;
use super::state::{RunState, Status};
use crate::runbook::OnFailure;
use crate::runbook::plan::Plan;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start (or retry) this step.
    Start(usize),
    /// Mark this step skipped, for this reason.
    Skip(usize, String),
    /// Nothing is running and nothing can start: the run is over.
    Finish(RunStatus),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Next {
    pub actions: Vec<Action>,
    /// The earliest time a waiting step (retry backoff) becomes startable.
    pub wake_at_ms: Option<i64>,
}

/// Why a pending step cannot run, if it cannot.
fn skip_reason(plan: &Plan, state: &RunState, i: usize) -> Option<String> {
    let ps = &plan.steps[i];
    if !ps.branch_parents.is_empty() {
        let chosen = ps.branch_parents.iter().any(|&b| {
            state.steps[b]
                .chosen
                .as_ref()
                .is_some_and(|c| c.iter().any(|t| t == plan.id(i)))
        });
        if !chosen {
            let b = plan.id(ps.branch_parents[0]);
            return Some(format!("not chosen by branch `{b}`"));
        }
    }
    if !ps.handler_of.is_empty() {
        let triggered = ps
            .handler_of
            .iter()
            .any(|&f| state.steps[f].status == Status::Failed);
        if !triggered {
            return Some("no failure to handle".to_string());
        }
    }
    if !ps.needs.is_empty() {
        for &d in &ps.needs {
            let st = &state.steps[d];
            if st.status == Status::Failed
                && !matches!(plan.steps[d].def.on_failure, OnFailure::Continue)
            {
                return Some(format!("needs `{}`, which failed", plan.id(d)));
            }
        }
        if ps
            .needs
            .iter()
            .all(|&d| state.steps[d].status == Status::Skipped)
        {
            return Some("every step it needs was skipped".to_string());
        }
    }
    None
}

/// The next actions, given the run's state at `now_ms`, starting at most `max_parallel` steps at once.
pub fn decide(plan: &Plan, state: &RunState, now_ms: i64, max_parallel: usize) -> Next {
    let mut next = Next::default();
    if state.status != RunStatus::Running {
        return next;
    }
    let mut running = state
        .steps
        .iter()
        .filter(|s| s.status == Status::Running)
        .count();
    for &i in &plan.order {
        let st = &state.steps[i];
        match st.status {
            Status::Pending => {}
            Status::RetryWait => {
                if state.aborting {
                    continue;
                }
                let at = st.retry_at_ms.unwrap_or(now_ms);
                if at <= now_ms {
                    if running < max_parallel {
                        next.actions.push(Action::Start(i));
                        running += 1;
                    }
                } else {
                    next.wake_at_ms = Some(next.wake_at_ms.map_or(at, |w| w.min(at)));
                }
                continue;
            }
            _ => continue,
        }
        let ps = &plan.steps[i];
        if !ps.preds.iter().all(|&p| state.steps[p].status.is_terminal()) {
            continue;
        }
        if let Some(reason) = skip_reason(plan, state, i) {
            next.actions.push(Action::Skip(i, reason));
            continue;
        }
        if state.aborting {
            continue;
        }
        if running < max_parallel {
            next.actions.push(Action::Start(i));
            running += 1;
        }
    }
    let idle = running == 0 && next.actions.is_empty() && next.wake_at_ms.is_none();
    if idle {
        let failed = state.aborting
            || plan.steps.iter().enumerate().any(|(i, ps)| {
                state.steps[i].status == Status::Failed
                    && !matches!(ps.def.on_failure, OnFailure::Continue)
            });
        next.actions.push(Action::Finish(if failed {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        }));
    }
    next
}
