//! A run's state: a pure fold of its events over the plan.

use super::event::{Event, RunStatus};
use crate::runbook::plan::Plan;
use runbook_steps::ErrorKind;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Running,
    /// Failed an attempt; another starts at `retry_at_ms`.
    RetryWait,
    Succeeded,
    Failed,
    Skipped,
}

impl Status {
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Skipped)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::RetryWait => "retry-wait",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepState {
    pub status: Status,
    pub attempt: u32,
    pub result: Option<Value>,
    pub outputs: Map<String, Value>,
    pub error: Option<(ErrorKind, String)>,
    pub retry_at_ms: Option<i64>,
    pub wait_deadline_ms: Option<i64>,
    pub skip_reason: Option<String>,
    /// Branch targets this step chose (branches only).
    pub chosen: Option<Vec<String>>,
}

impl StepState {
    fn new() -> StepState {
        StepState {
            status: Status::Pending,
            attempt: 0,
            result: None,
            outputs: Map::new(),
            error: None,
            retry_at_ms: None,
            wait_deadline_ms: None,
            skip_reason: None,
            chosen: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    pub status: RunStatus,
    pub params: Map<String, Value>,
    pub vars: Map<String, Value>,
    pub steps: Vec<StepState>,
    /// A step failed with `on_failure: abort`: start nothing new.
    pub aborting: bool,
}

impl RunState {
    pub fn new(plan: &Plan) -> RunState {
        RunState {
            status: RunStatus::Running,
            params: Map::new(),
            vars: Map::new(),
            steps: vec![StepState::new(); plan.steps.len()],
            aborting: false,
        }
    }

    pub fn fold<'e>(plan: &Plan, events: impl IntoIterator<Item = &'e Event>) -> RunState {
        let mut s = RunState::new(plan);
        for e in events {
            s.apply(plan, e);
        }
        s
    }

    /// Applies one event. Events naming unknown steps are ignored: the journal is the truth, and a
    /// view over a changed runbook must not crash on it.
    pub fn apply(&mut self, plan: &Plan, event: &Event) {
        let idx = event.step().and_then(|s| plan.index.get(s).copied());
        match event {
            Event::RunStarted { params, vars, .. } => {
                self.params = params.clone();
                self.vars = vars.clone();
            }
            Event::StepStarted { attempt, .. } => {
                if let Some(i) = idx {
                    let st = &mut self.steps[i];
                    st.status = Status::Running;
                    st.attempt = *attempt;
                    st.retry_at_ms = None;
                }
            }
            Event::WaitStarted { deadline_ms, .. } => {
                if let Some(i) = idx {
                    self.steps[i].wait_deadline_ms = Some(*deadline_ms);
                }
            }
            Event::DecisionTaken { taken, .. } => {
                if let Some(i) = idx {
                    self.steps[i].chosen = Some(taken.clone());
                }
            }
            Event::StepSucceeded {
                attempt,
                result,
                outputs,
                ..
            } => {
                if let Some(i) = idx {
                    let st = &mut self.steps[i];
                    st.status = Status::Succeeded;
                    st.attempt = *attempt;
                    st.result = Some(result.clone());
                    st.outputs = outputs.clone();
                    st.error = None;
                }
            }
            Event::StepFailed {
                attempt,
                kind,
                error,
                retry_at_ms,
                ..
            } => {
                if let Some(i) = idx {
                    let st = &mut self.steps[i];
                    st.attempt = *attempt;
                    st.error = Some((*kind, error.clone()));
                    match retry_at_ms {
                        Some(at) => {
                            st.status = Status::RetryWait;
                            st.retry_at_ms = Some(*at);
                        }
                        None => {
                            st.status = Status::Failed;
                            if matches!(
                                plan.steps[i].def.on_failure,
                                crate::runbook::OnFailure::Abort
                            ) {
                                self.aborting = true;
                            }
                        }
                    }
                }
            }
            Event::StepSkipped { reason, .. } => {
                if let Some(i) = idx {
                    self.steps[i].status = Status::Skipped;
                    self.steps[i].skip_reason = Some(reason.clone());
                }
            }
            Event::RunFinished { status, .. } => self.status = *status,
            Event::RunInterrupted { .. } => self.status = RunStatus::Interrupted,
            Event::ApprovalGranted { .. } | Event::GuardEvaluated { .. } => {}
        }
    }
}
