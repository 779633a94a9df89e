//! A run's state: a pure fold of its events over the plan.

use super::event::{Event, OperatorAction, Recovery, RunStatus};
use crate::runbook::plan::Plan;
use runbook_steps::ErrorKind;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Running,
    /// Failed an attempt; another starts at `retry_at_ms`.
    RetryWait,
    Succeeded,
    Failed,
    Skipped,
    /// An `unsafe` step was in flight when the run stopped; only an operator can say what happened.
    Unknown,
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
            Status::Unknown => "unknown",
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
    /// The timeout deadline of the attempt in flight; an attempt re-run after a crash keeps it.
    pub deadline_ms: Option<i64>,
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
            deadline_ms: None,
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
    /// Per step, how many of its predecessors are not finished yet.
    waiting_on: Vec<usize>,
    /// Pending steps whose predecessors are all finished, by topological rank: what the scheduler
    /// looks at, so deciding costs what is ready rather than the size of the runbook.
    pub ready: BTreeSet<usize>,
    /// Steps waiting for a retry, by rank.
    pub retrying: BTreeSet<usize>,
    pub running: usize,
}

impl RunState {
    pub fn new(plan: &Plan) -> RunState {
        let waiting_on: Vec<usize> = plan.steps.iter().map(|s| s.preds.len()).collect();
        let ready = (0..plan.steps.len())
            .filter(|&i| waiting_on[i] == 0)
            .map(|i| plan.rank[i])
            .collect();
        RunState {
            status: RunStatus::Running,
            params: Map::new(),
            vars: Map::new(),
            steps: vec![StepState::new(); plan.steps.len()],
            aborting: false,
            waiting_on,
            ready,
            retrying: BTreeSet::new(),
            running: 0,
        }
    }

    /// Moves step `i` to `new`, keeping the ready set, the retry set and the running count in step.
    fn set_status(&mut self, plan: &Plan, i: usize, new: Status) {
        let old = self.steps[i].status;
        if old == new {
            return;
        }
        let rank = plan.rank[i];
        match old {
            Status::Pending => {
                self.ready.remove(&rank);
            }
            Status::RetryWait => {
                self.retrying.remove(&rank);
            }
            Status::Running => self.running -= 1,
            _ => {}
        }
        match new {
            Status::Running => self.running += 1,
            Status::RetryWait => {
                self.retrying.insert(rank);
            }
            Status::Pending if self.waiting_on[i] == 0 => {
                self.ready.insert(rank);
            }
            _ => {}
        }
        self.steps[i].status = new;
        if new.is_terminal() && !old.is_terminal() {
            for &s in &plan.steps[i].succs {
                self.waiting_on[s] -= 1;
                if self.waiting_on[s] == 0 && self.steps[s].status == Status::Pending {
                    self.ready.insert(plan.rank[s]);
                }
            }
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
            Event::StepStarted {
                attempt,
                deadline_ms,
                ..
            } => {
                if let Some(i) = idx {
                    self.set_status(plan, i, Status::Running);
                    let st = &mut self.steps[i];
                    st.attempt = *attempt;
                    st.retry_at_ms = None;
                    st.deadline_ms = *deadline_ms;
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
                    self.set_status(plan, i, Status::Succeeded);
                    let st = &mut self.steps[i];
                    st.deadline_ms = None;
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
                    self.set_status(
                        plan,
                        i,
                        if retry_at_ms.is_some() {
                            Status::RetryWait
                        } else {
                            Status::Failed
                        },
                    );
                    let st = &mut self.steps[i];
                    st.deadline_ms = None;
                    st.attempt = *attempt;
                    st.error = Some((*kind, error.clone()));
                    match retry_at_ms {
                        Some(at) => {
                            st.retry_at_ms = Some(*at);
                            // Each attempt of a wait gets its own deadline.
                            st.wait_deadline_ms = None;
                        }
                        None => {
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
                    self.set_status(plan, i, Status::Skipped);
                    self.steps[i].skip_reason = Some(reason.clone());
                }
            }
            Event::RunFinished { status, .. } => self.status = *status,
            Event::RunInterrupted { .. } => self.status = RunStatus::Interrupted,
            Event::RunParked { .. } => self.status = RunStatus::Waiting,
            Event::StepReused {
                status,
                kind,
                result,
                outputs,
                chosen,
                reason,
                ..
            } => {
                if let Some(i) = idx {
                    if status == "skipped" {
                        self.set_status(plan, i, Status::Skipped);
                        self.steps[i].skip_reason = reason.clone();
                    } else if status == "failed" {
                        self.set_status(plan, i, Status::Failed);
                        self.steps[i].error = Some((
                            kind.unwrap_or(ErrorKind::Other),
                            reason.clone().unwrap_or_default(),
                        ));
                    } else {
                        self.set_status(plan, i, Status::Succeeded);
                        self.steps[i].result = result.clone();
                        self.steps[i].outputs = outputs.clone();
                        self.steps[i].chosen = chosen.clone();
                    }
                }
            }
            Event::RerunOf { .. } => {}
            Event::RunResumed { .. } => self.status = RunStatus::Running,
            Event::StepRecovered { outcome, .. } => {
                if let Some(i) = idx {
                    self.set_status(
                        plan,
                        i,
                        match outcome {
                            Recovery::Rerun => Status::Pending,
                            Recovery::Unknown => Status::Unknown,
                        },
                    );
                }
            }
            Event::OperatorDecided { action, .. } => {
                if let Some(i) = idx {
                    match action {
                        OperatorAction::Retry => self.set_status(plan, i, Status::Pending),
                        OperatorAction::MarkDone => {
                            self.set_status(plan, i, Status::Succeeded);
                            self.steps[i].result = Some(Value::Null);
                        }
                        OperatorAction::MarkFailed => {
                            self.set_status(plan, i, Status::Failed);
                            self.steps[i].error = Some((
                                ErrorKind::Other,
                                "marked failed by an operator".to_string(),
                            ));
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
            Event::ApprovalGranted { .. } | Event::GuardEvaluated { .. } => {}
        }
    }
}
