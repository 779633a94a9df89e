//! A run's state: a pure fold of its events over the plan.

use super::event::{Event, OperatorAction, Recovery, RunStatus};
use crate::runbook::plan::Plan;
use runbook_steps::{ErrorKind, SideEffect};
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
    /// Waits for a person to approve (or deny) its next attempt.
    AwaitingApproval,
    /// In a plan: what it would do was recorded instead of doing it.
    Planned,
}

impl Status {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Succeeded | Status::Failed | Status::Skipped | Status::Planned
        )
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
            Status::AwaitingApproval => "awaiting-approval",
            Status::Planned => "planned",
        }
    }

    pub const ALL: [Status; 9] = [
        Status::Pending,
        Status::Running,
        Status::RetryWait,
        Status::Succeeded,
        Status::Failed,
        Status::Skipped,
        Status::Unknown,
        Status::AwaitingApproval,
        Status::Planned,
    ];

    /// The status `as_str` names (a step's status in a read model's JSON).
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepState {
    pub status: Status,
    pub attempt: u32,
    pub result: Option<Value>,
    pub outputs: Map<String, Value>,
    pub error: Option<(ErrorKind, String)>,
    /// The side-effect class of the last attempt started.
    pub class: Option<SideEffect>,
    pub retry_at_ms: Option<i64>,
    pub wait_deadline_ms: Option<i64>,
    /// The timeout deadline of the attempt in flight; an attempt re-run after a crash keeps it.
    pub deadline_ms: Option<i64>,
    pub skip_reason: Option<String>,
    /// Branch targets this step chose (branches only).
    pub chosen: Option<Vec<String>>,
    /// When the current wait (`flow.sleep`, `flow.wait_until`) began.
    pub wait_started_ms: Option<i64>,
    /// A `flow.wait_until` in progress.
    pub probe: ProbeState,
    pub approval: ApprovalState,
}

/// Where a `flow.wait_until` stands between probes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeState {
    /// Probes sent so far in this attempt.
    pub sent: u64,
    pub in_flight: bool,
    /// When the next probe is due (the first is due when the wait starts).
    pub next_at_ms: Option<i64>,
    pub true_since_ms: Option<i64>,
    pub last_problem: Option<String>,
}

/// The approval of a step's next attempt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApprovalState {
    /// The attempt a request is open (or was answered) for.
    pub requested_for: Option<u32>,
    pub expires_at_ms: Option<i64>,
    pub granted_for: Option<u32>,
    /// Who denied it and why.
    pub denied: Option<(String, String)>,
}

impl StepState {
    fn new() -> StepState {
        StepState {
            status: Status::Pending,
            attempt: 0,
            result: None,
            outputs: Map::new(),
            error: None,
            class: None,
            retry_at_ms: None,
            wait_deadline_ms: None,
            deadline_ms: None,
            skip_reason: None,
            chosen: None,
            wait_started_ms: None,
            probe: ProbeState::default(),
            approval: ApprovalState::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    pub status: RunStatus,
    pub params: Map<String, Value>,
    pub vars: Map<String, Value>,
    pub steps: Vec<StepState>,
    /// A step failed with `on_failure: abort`, or the run was cancelled: start nothing new.
    pub aborting: bool,
    /// The first step that started with side effects (a class other than `read`; an attempt whose
    /// approval was refused does not count): from then on the run has begun changing things.
    pub acted: Option<usize>,
    /// The requests (`run_requests` ids) the journal has taken: each is journaled once.
    pub taken: BTreeSet<String>,
    /// Per step, how many of its predecessors are not finished yet.
    waiting_on: Vec<usize>,
    /// Pending steps whose predecessors are all finished, by topological rank: what the scheduler
    /// looks at, so deciding costs what is ready rather than the size of the runbook.
    pub ready: BTreeSet<usize>,
    /// Steps waiting for a retry, by rank.
    pub retrying: BTreeSet<usize>,
    /// Running steps that are waits (`flow.sleep`, `flow.wait_until`) with a journaled deadline, by rank.
    pub timers: BTreeSet<usize>,
    /// Steps awaiting approval, by rank.
    pub approvals: BTreeSet<usize>,
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
            acted: None,
            taken: BTreeSet::new(),
            waiting_on,
            ready,
            retrying: BTreeSet::new(),
            timers: BTreeSet::new(),
            approvals: BTreeSet::new(),
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
            Status::Running => {
                self.running -= 1;
                self.timers.remove(&rank);
            }
            Status::AwaitingApproval => {
                self.approvals.remove(&rank);
            }
            _ => {}
        }
        match new {
            Status::Running => self.running += 1,
            Status::AwaitingApproval => {
                self.approvals.insert(rank);
            }
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
                class,
                deadline_ms,
                ..
            } => {
                if let Some(i) = idx {
                    // A refused approval is journaled as an attempt that fails at once: it changed
                    // nothing.
                    let a = &self.steps[i].approval;
                    let refused = a.requested_for == Some(*attempt) && a.denied.is_some();
                    if *class != SideEffect::Read && !refused && self.acted.is_none() {
                        self.acted = Some(i);
                    }
                    self.set_status(plan, i, Status::Running);
                    let st = &mut self.steps[i];
                    st.class = Some(*class);
                    st.attempt = *attempt;
                    st.retry_at_ms = None;
                    st.deadline_ms = *deadline_ms;
                    st.probe = ProbeState::default();
                }
            }
            Event::WaitStarted {
                deadline_ms,
                started_ms,
                ..
            } => {
                if let Some(i) = idx {
                    let st = &mut self.steps[i];
                    st.wait_deadline_ms = Some(*deadline_ms);
                    st.wait_started_ms = *started_ms;
                    // A wait_until's first probe is due at once.
                    st.probe.next_at_ms = started_ms.or(Some(i64::MIN));
                    if st.status == Status::Running {
                        self.timers.insert(plan.rank[i]);
                    }
                }
            }
            Event::ProbeStarted { probe, .. } => {
                if let Some(i) = idx {
                    let p = &mut self.steps[i].probe;
                    p.sent = *probe;
                    p.in_flight = true;
                }
            }
            Event::ProbeDone {
                probe,
                problem,
                true_since_ms,
                next_at_ms,
                ..
            } => {
                if let Some(i) = idx {
                    let p = &mut self.steps[i].probe;
                    p.sent = *probe;
                    p.in_flight = false;
                    p.next_at_ms = Some(*next_at_ms);
                    p.true_since_ms = *true_since_ms;
                    p.last_problem = problem.clone();
                }
            }
            Event::ApprovalRequested {
                attempt,
                expires_at_ms,
                ..
            } => {
                if let Some(i) = idx {
                    self.set_status(plan, i, Status::AwaitingApproval);
                    self.steps[i].approval = ApprovalState {
                        requested_for: Some(*attempt),
                        expires_at_ms: *expires_at_ms,
                        granted_for: None,
                        denied: None,
                    };
                }
            }
            Event::ApprovalGranted { .. } => {
                if let Some(i) = idx {
                    // Older journals grant without a request, just before the attempt starts.
                    let next = self.steps[i].attempt + 1;
                    let a = &mut self.steps[i].approval;
                    a.granted_for = Some(a.requested_for.unwrap_or(next));
                    a.expires_at_ms = None;
                    self.set_status(plan, i, Status::Pending);
                }
            }
            Event::ApprovalDenied { by, reason, .. } => {
                if let Some(i) = idx {
                    let a = &mut self.steps[i].approval;
                    a.denied = Some((by.clone(), reason.clone()));
                    a.expires_at_ms = None;
                    self.set_status(plan, i, Status::Pending);
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
            Event::StepPlanned { plan: planned, .. } => {
                if let Some(i) = idx {
                    self.set_status(plan, i, Status::Planned);
                    self.steps[i].deadline_ms = None;
                    self.steps[i].result = Some(planned.clone());
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
            Event::RunDetached { .. } => self.status = RunStatus::Parked,
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
            Event::RerunOf { .. } | Event::RunTriggered { .. } => {}
            Event::RunCancelled { request, .. } => {
                self.taken.insert(request.clone());
                self.aborting = true;
            }
            Event::CancelRefused { request, .. } | Event::RunNoted { request, .. } => {
                self.taken.insert(request.clone());
            }
            Event::RunResumed { .. } => {
                self.status = RunStatus::Running;
                // A probe in flight at the stop has no answer; the next one is due at once.
                for st in &mut self.steps {
                    if st.probe.in_flight {
                        st.probe.in_flight = false;
                        st.probe.next_at_ms = Some(i64::MIN);
                    }
                }
            }
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
            Event::GuardEvaluated { .. }
            | Event::ConnectionsResolved { .. }
            | Event::StepProcess { .. }
            | Event::ProcessFound { .. } => {}
        }
    }
}
