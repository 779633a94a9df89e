//! What people read about a run, folded from its journal: the run's status, who started it and when,
//! its resumes, and per step its status, attempts (and why each one happened), decisions with the
//! values they read, guards, approvals, operator decisions and errors.
//!
//! `show`, `audit`, the live view and any JSON API render from this one fold. It is not the
//! scheduler's state ([`super::state::RunState`]): it keeps history (every attempt, who acted) and
//! never panics, whatever the events say (unknown steps, a runbook changed between resumes,
//! unreadable events).

mod loaded;
mod types;

pub use loaded::Loaded;
pub use types::*;

use super::event::{Event, OperatorAction, Record, Recovery, RunStatus};
use super::state::Status;
use crate::runbook::plan::Plan;
use crate::store::RunRow;
use runbook_steps::{ErrorKind, SideEffect};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// A run as people read it. Serializes as `{run, steps, resumes, interventions, ...}`.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub run: RunSummary,
    pub steps: Vec<StepView>,
    /// Each time the run was picked up again.
    pub resumes: Vec<Resume>,
    /// What people (or flags acting for them) did: approvals given or refused, operator decisions,
    /// resumes, interruptions and parks, in journal order.
    pub interventions: Vec<Intervention>,
    /// What other processes told the run (alert notifications about it), in journal order.
    pub notes: Vec<Noted>,
    /// Events whose stored text is not an event this engine knows (only after tampering or from a
    /// newer engine): their sequence numbers.
    pub unreadable: Vec<i64>,
    #[serde(skip)]
    index: HashMap<String, usize>,
    /// The sequence number and time of the last event applied.
    #[serde(skip)]
    last: Option<(i64, i64)>,
    /// The sequence number of the last `run_detached`.
    #[serde(skip)]
    detached: Option<i64>,
}

/// A view read back from its JSON (the HTTP API's `GET /api/v1/runs/{run}`), to render as a folded
/// one renders. The step index is rebuilt from the steps; what only folding needs next (the last
/// event, the last detach, why a step's next attempt happens) is not in the JSON, so a view read
/// back is for rendering, not for applying more events to.
impl<'de> Deserialize<'de> for RunView {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<RunView, D::Error> {
        #[derive(Deserialize)]
        struct Shown {
            run: RunSummary,
            steps: Vec<StepView>,
            resumes: Vec<Resume>,
            interventions: Vec<Intervention>,
            #[serde(default)]
            notes: Vec<Noted>,
            unreadable: Vec<i64>,
        }
        let s = Shown::deserialize(de)?;
        let index = s
            .steps
            .iter()
            .enumerate()
            .map(|(i, st)| (st.id.clone(), i))
            .collect();
        Ok(RunView {
            run: s.run,
            steps: s.steps,
            resumes: s.resumes,
            interventions: s.interventions,
            notes: s.notes,
            unreadable: s.unreadable,
            index,
            last: None,
            detached: None,
        })
    }
}

impl RunView {
    /// An empty view; `plan` (of the runbook the run follows) lists its steps in file order, with
    /// steps that never started as `pending`.
    pub fn new(plan: Option<&Plan>) -> RunView {
        let mut v = RunView {
            run: RunSummary::default(),
            steps: Vec::new(),
            resumes: Vec::new(),
            interventions: Vec::new(),
            notes: Vec::new(),
            unreadable: Vec::new(),
            index: HashMap::new(),
            last: None,
            detached: None,
        };
        for s in plan.iter().flat_map(|p| &p.steps) {
            let i = v.step_index(&s.def.id.name);
            v.steps[i].uses = s.def.uses.name.clone();
            v.steps[i].approval_required = Some(s.def.approval);
        }
        v
    }

    /// The view of a stored run: its row, then every record.
    pub fn of_run(run: &RunRow, records: &[Record], plan: Option<&Plan>) -> RunView {
        let mut v = RunView::new(plan);
        for r in records {
            v.apply(r);
        }
        v.with_row(run);
        v
    }

    /// Fills in what only the run's row knows, and takes its status and end as the truth.
    pub fn with_row(&mut self, run: &RunRow) {
        let s = &mut self.run;
        s.id.clone_from(&run.id);
        s.runbook.clone_from(&run.runbook);
        s.title.clone_from(&run.title);
        s.source_path.clone_from(&run.source_path);
        s.runbook_sha256.clone_from(&run.runbook_sha256);
        s.params = run.params.clone();
        s.status = Some(run.status);
        s.actor.clone_from(&run.actor);
        s.started_at = run.started_at;
        s.finished_at = run.finished_at;
        s.parent_run.clone_from(&run.parent_run);
        s.duration_ms = run.finished_at.map(|f| f.saturating_sub(run.started_at));
    }

    pub fn step(&self, id: &str) -> Option<&StepView> {
        self.index.get(id).map(|&i| &self.steps[i])
    }

    fn step_index(&mut self, id: &str) -> usize {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        self.steps.push(StepView {
            id: id.to_string(),
            uses: String::new(),
            status: Status::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
            class: None,
            error: None,
            error_kind: None,
            skip_reason: None,
            decision: None,
            guards: Vec::new(),
            approval: None,
            operator: None,
            outputs: None,
            reused_from: None,
            approval_required: None,
            planned: None,
            still_running: None,
            tries: Vec::new(),
            next: None,
        });
        self.index.insert(id.to_string(), self.steps.len() - 1);
        self.steps.len() - 1
    }

    fn intervene(&mut self, r: &Record, what: Act) {
        self.interventions.push(Intervention {
            seq: r.seq,
            at: r.at_ms,
            actor: r.actor.clone(),
            what,
        });
    }

    /// Applies one stored record. Never fails: an unreadable event is noted and skipped.
    pub fn apply(&mut self, r: &Record) {
        match r.event() {
            Ok(e) => self.apply_event(r, &e),
            Err(_) => {
                self.unreadable.push(r.seq);
                self.run.events += 1;
                self.last = Some((r.seq, r.at_ms));
            }
        }
    }

    /// Applies a record whose event is already parsed (the live view has both).
    pub fn apply_event(&mut self, r: &Record, event: &Event) {
        self.run.events += 1;
        let previous = self.last.replace((r.seq, r.at_ms));
        if let Some(step) = event.step() {
            let i = self.step_index(step);
            self.apply_step(i, r, event);
            return;
        }
        match event {
            Event::RunStarted {
                runbook,
                runbook_sha256,
                params,
                engine_version,
                ..
            } => {
                let s = &mut self.run;
                s.id.clone_from(&r.run_id);
                s.runbook.clone_from(runbook);
                s.runbook_sha256.clone_from(runbook_sha256);
                s.params = Value::Object(params.clone());
                s.actor.clone_from(&r.actor);
                s.started_at = r.at_ms;
                s.status = Some(RunStatus::Running);
                s.engine_version = Some(engine_version.clone());
            }
            Event::RunFinished { status, error } => {
                self.run.status = Some(*status);
                self.run.error.clone_from(error);
                self.ended(r.at_ms);
            }
            Event::RunInterrupted { reason } => {
                self.run.status = Some(RunStatus::Interrupted);
                self.ended(r.at_ms);
                self.intervene(
                    r,
                    Act::Interrupt {
                        reason: reason.clone(),
                    },
                );
            }
            Event::RunParked { waiting_for } => {
                self.run.status = Some(RunStatus::Waiting);
                self.intervene(
                    r,
                    Act::Park {
                        waiting_for: waiting_for.clone(),
                    },
                );
            }
            Event::RunDetached { .. } => {
                self.run.status = Some(RunStatus::Parked);
                self.detached = Some(r.seq);
            }
            Event::RunResumed { runbook_sha256, .. } => {
                let after = match self.interventions.last() {
                    Some(i) if previous.is_some_and(|p| p.0 == i.seq) => match i.what {
                        Act::Interrupt { .. } => Stop::Interrupted,
                        Act::Park { .. } => Stop::Parked,
                        _ => Stop::Crashed,
                    },
                    _ if previous.is_some_and(|p| Some(p.0) == self.detached) => Stop::Detached,
                    _ => Stop::Crashed,
                };
                let down_ms = previous.map(|p| r.at_ms.saturating_sub(p.1).max(0));
                let changed_runbook =
                    (*runbook_sha256 != self.run.runbook_sha256).then(|| runbook_sha256.clone());
                self.run.status = Some(RunStatus::Running);
                self.run.finished_at = None;
                self.run.duration_ms = None;
                self.resumes.push(Resume {
                    seq: r.seq,
                    at: r.at_ms,
                    by: r.actor.clone(),
                    down_ms,
                    after,
                    changed_runbook: changed_runbook.clone(),
                });
                self.intervene(
                    r,
                    Act::Resume {
                        down_ms,
                        changed_runbook,
                    },
                );
            }
            Event::RerunOf {
                parent_run,
                from_step,
            } => {
                self.run.parent_run = Some(parent_run.clone());
                self.run.rerun_from = Some(from_step.clone());
            }
            Event::RunTriggered { trigger } => self.run.trigger = Some(trigger.clone()),
            Event::RunCancelled {
                by, how, reason, ..
            } => self.intervene(
                r,
                Act::Cancel {
                    by: by.clone(),
                    how: how.clone(),
                    reason: reason.clone(),
                },
            ),
            Event::CancelRefused {
                by,
                how,
                reason,
                why,
                ..
            } => self.intervene(
                r,
                Act::CancelRefused {
                    by: by.clone(),
                    how: how.clone(),
                    reason: reason.clone(),
                    why: why.clone(),
                },
            ),
            Event::RunNoted { by, how, note, .. } => self.notes.push(Noted {
                seq: r.seq,
                at: r.at_ms,
                by: by.clone(),
                how: how.clone(),
                note: note.clone(),
            }),
            _ => {}
        }
    }

    fn ended(&mut self, at: i64) {
        self.run.finished_at = Some(at);
        self.run.duration_ms = Some(at.saturating_sub(self.run.started_at));
    }

    fn apply_step(&mut self, i: usize, r: &Record, event: &Event) {
        let mut act = None;
        let v = &mut self.steps[i];
        match event {
            Event::StepStarted {
                attempt,
                class,
                inputs,
                ..
            } => {
                // A start with no outcome for the previous attempt is a re-run after a stop.
                let why = v.next.take().unwrap_or(if v.tries.is_empty() {
                    Why::First
                } else {
                    Why::CrashRerun
                });
                if let Some(t) = v.tries.last_mut()
                    && *t.outcome() == Outcome::Running
                {
                    t.settle(Outcome::Superseded, None);
                }
                // A granted approval comes just before the attempt it lets start; that attempt
                // says which class and inputs were approved.
                let approval = match &mut v.approval {
                    Some(a) if a.granted && v.tries.iter().all(|t| t.seq < a.seq) => {
                        a.class = *class;
                        a.inputs = inputs.clone();
                        Some(a.clone())
                    }
                    _ => None,
                };
                v.tries.push(Attempt {
                    seq: r.seq,
                    number: *attempt,
                    why,
                    at: r.at_ms,
                    actor: r.actor.clone(),
                    class: *class,
                    inputs: inputs.clone(),
                    approval,
                    outcomes: Vec::new(),
                    ended_at: None,
                });
                v.status = Status::Running;
                v.attempts = *attempt;
                v.started_at.get_or_insert(r.at_ms);
                v.class = Some(*class);
            }
            Event::ApprovalRequested { .. } => v.status = Status::AwaitingApproval,
            // The denial ends in an attempt that fails at once (kind `approval`), read below.
            Event::ApprovalDenied { .. } => v.status = Status::Pending,
            Event::ApprovalGranted { step, by, how, .. } => {
                v.approval = Some(Approval {
                    seq: r.seq,
                    at: r.at_ms,
                    granted: true,
                    by: by.clone(),
                    how: how.clone(),
                    class: v.class.unwrap_or(SideEffect::Unsafe),
                    inputs: Value::Null,
                });
                act = Some(Act::Approval {
                    step: step.clone(),
                    by: by.clone(),
                    how: how.clone(),
                });
            }
            Event::StepSucceeded { outputs, .. } => {
                v.status = Status::Succeeded;
                v.finished_at = Some(r.at_ms);
                v.error = None;
                v.error_kind = None;
                if !outputs.is_empty() {
                    v.outputs = Some(outputs.clone());
                }
                if let Some(t) = v.tries.last_mut() {
                    t.settle(Outcome::Succeeded, Some(r.at_ms));
                }
            }
            Event::StepFailed {
                step,
                kind,
                error,
                retry_at_ms,
                ..
            } => {
                v.status = if retry_at_ms.is_some() {
                    Status::RetryWait
                } else {
                    Status::Failed
                };
                v.finished_at = Some(r.at_ms);
                v.error = Some(error.clone());
                v.error_kind = Some(*kind);
                let refused = *kind == ErrorKind::Approval
                    && v.tries.last().is_some_and(|t| {
                        *t.outcome() == Outcome::Running
                            && t.approval.is_none()
                            && t.seq + 1 == r.seq
                    });
                if refused {
                    // The driver journals a refused approval as an attempt that failed at once;
                    // nothing was started, so it is an approval refused, not an attempt.
                    if let Some(t) = v.tries.pop() {
                        v.approval = Some(Approval {
                            seq: t.seq,
                            at: r.at_ms,
                            granted: false,
                            by: t.actor.clone(),
                            how: error.clone(),
                            class: t.class,
                            inputs: t.inputs,
                        });
                    }
                    act = Some(Act::Refusal {
                        step: step.clone(),
                        reason: error.clone(),
                    });
                } else if let Some(t) = v.tries.last_mut() {
                    v.next = Some(Why::Retry);
                    t.settle(
                        Outcome::Failed {
                            kind: *kind,
                            error: error.clone(),
                            retry_at: *retry_at_ms,
                        },
                        Some(r.at_ms),
                    );
                }
            }
            Event::StepSkipped { reason, .. } => {
                v.status = Status::Skipped;
                v.skip_reason = Some(reason.clone());
            }
            Event::ProcessFound { group, action, .. } => {
                v.still_running = (action == "left_running").then_some(group.pgid);
            }
            Event::StepPlanned { plan, .. } => {
                v.status = Status::Planned;
                v.finished_at = Some(r.at_ms);
                v.planned = Some(plan.clone());
                // Nothing was attempted: the start only marked the plugin being asked.
                if let Some(t) = v.tries.last_mut() {
                    t.settle(Outcome::Succeeded, Some(r.at_ms));
                }
            }
            Event::DecisionTaken {
                case,
                condition,
                values,
                taken,
                not_taken,
                ..
            } => {
                v.decision = Some(Decision {
                    seq: r.seq,
                    at: r.at_ms,
                    case: *case,
                    condition: condition.clone(),
                    values: values.clone(),
                    taken: taken.clone(),
                    not_taken: not_taken.clone(),
                    reused: false,
                });
            }
            Event::GuardEvaluated {
                condition,
                holds,
                values,
                ..
            } => v.guards.push(Guard {
                seq: r.seq,
                at: r.at_ms,
                condition: condition.clone(),
                holds: *holds,
                values: values.clone(),
            }),
            Event::StepReused {
                from_run,
                status,
                kind,
                outputs,
                chosen,
                reason,
                ..
            } => {
                v.status = match status.as_str() {
                    "skipped" => Status::Skipped,
                    "failed" => Status::Failed,
                    _ => Status::Succeeded,
                };
                if v.status == Status::Failed {
                    v.error.clone_from(reason);
                    v.error_kind = Some(kind.unwrap_or(ErrorKind::Other));
                } else {
                    v.skip_reason.clone_from(reason);
                }
                v.reused_from = Some(from_run.clone());
                if !outputs.is_empty() {
                    v.outputs = Some(outputs.clone());
                }
                if let Some(c) = chosen {
                    v.decision = Some(Decision {
                        seq: r.seq,
                        at: r.at_ms,
                        case: None,
                        condition: None,
                        values: Map::new(),
                        taken: c.clone(),
                        not_taken: Vec::new(),
                        reused: true,
                    });
                }
            }
            Event::StepRecovered { outcome, .. } => {
                let (status, o) = match outcome {
                    Recovery::Rerun => (Status::Pending, Outcome::Interrupted),
                    Recovery::Unknown => (Status::Unknown, Outcome::Unknown),
                };
                v.status = status;
                v.next = Some(match outcome {
                    Recovery::Rerun => Why::CrashRerun,
                    Recovery::Unknown => Why::OperatorRetry,
                });
                if let Some(t) = v.tries.last_mut() {
                    t.settle(o, None);
                }
            }
            Event::OperatorDecided { step, action, by } => {
                v.operator = Some(Operator {
                    seq: r.seq,
                    at: r.at_ms,
                    action: *action,
                    by: by.clone(),
                });
                let settled = match action {
                    OperatorAction::Retry => {
                        v.status = Status::Pending;
                        v.next = Some(Why::OperatorRetry);
                        Some(Outcome::RetriedByOperator { by: by.clone() })
                    }
                    OperatorAction::MarkDone => {
                        v.status = Status::Succeeded;
                        v.finished_at = Some(r.at_ms);
                        Some(Outcome::MarkedDone { by: by.clone() })
                    }
                    OperatorAction::MarkFailed => {
                        v.status = Status::Failed;
                        v.finished_at = Some(r.at_ms);
                        v.error = Some(format!("marked failed by {by}"));
                        v.error_kind = Some(ErrorKind::Other);
                        Some(Outcome::MarkedFailed { by: by.clone() })
                    }
                };
                if let (Some(o), Some(t)) = (settled, v.tries.last_mut()) {
                    t.settle(o, Some(r.at_ms));
                }
                act = Some(Act::OperatorDecision {
                    step: step.clone(),
                    action: *action,
                });
            }
            Event::WaitStarted { .. } => {}
            // Run-level events carry no step.
            _ => {}
        }
        if let Some(a) = act {
            self.intervene(r, a);
        }
    }

    /// Every attempt of every step, in journal order.
    pub fn attempts(&self) -> Vec<(&StepView, &Attempt)> {
        let mut all: Vec<(&StepView, &Attempt)> = self
            .steps
            .iter()
            .flat_map(|s| s.tries.iter().map(move |t| (s, t)))
            .collect();
        all.sort_by_key(|(_, t)| t.seq);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::event::Chain;

    fn started(step: &str, attempt: u32, class: SideEffect) -> Event {
        Event::StepStarted {
            step: step.into(),
            attempt,
            class,
            inputs: serde_json::json!({"argv": ["x"]}),
            deadline_ms: None,
        }
    }

    fn failed(step: &str, attempt: u32, kind: ErrorKind, retry: Option<i64>) -> Event {
        Event::StepFailed {
            step: step.into(),
            attempt,
            kind,
            error: "boom".into(),
            detail: None,
            retry_at_ms: retry,
        }
    }

    fn view(events: &[(i64, &str, Event)]) -> RunView {
        let mut chain = Chain::new("r");
        let mut v = RunView::new(None);
        let first = Event::RunStarted {
            runbook: "t".into(),
            runbook_sha256: "abc".into(),
            params: Map::new(),
            vars: Map::new(),
            engine_version: "0".into(),
        };
        v.apply(&chain.seal(1_000, "alice", &first));
        for (at, who, e) in events {
            v.apply(&chain.seal(*at, who, e));
        }
        v
    }

    #[test]
    fn a_retry_and_a_crash_rerun_are_told_apart() {
        let v = view(&[
            (1_100, "alice", started("s", 1, SideEffect::Read)),
            (
                1_200,
                "alice",
                failed("s", 1, ErrorKind::Connect, Some(1_300)),
            ),
            (1_300, "alice", started("s", 2, SideEffect::Read)),
            (
                61_300,
                "bob",
                Event::RunResumed {
                    runbook_sha256: "abc".into(),
                    runbook_text: None,
                },
            ),
            (
                61_301,
                "bob",
                Event::StepRecovered {
                    step: "s".into(),
                    attempt: 2,
                    outcome: Recovery::Rerun,
                },
            ),
            (61_400, "bob", started("s", 3, SideEffect::Read)),
            (
                61_500,
                "bob",
                Event::StepSucceeded {
                    step: "s".into(),
                    attempt: 3,
                    result: Value::Null,
                    outputs: Map::new(),
                },
            ),
            (
                61_600,
                "bob",
                Event::RunFinished {
                    status: RunStatus::Succeeded,
                    error: None,
                },
            ),
        ]);
        let s = v.step("s").expect("step");
        let why: Vec<Why> = s.tries.iter().map(|t| t.why).collect();
        assert_eq!(why, [Why::First, Why::Retry, Why::CrashRerun]);
        assert_eq!(s.tries[1].outcome(), &Outcome::Interrupted);
        assert_eq!(s.status, Status::Succeeded);
        assert_eq!(v.resumes.len(), 1);
        assert_eq!(v.resumes[0].by, "bob");
        assert_eq!(v.resumes[0].down_ms, Some(60_000));
        assert_eq!(v.resumes[0].after, Stop::Crashed);
        // The whole run, from its first start, not from the resume.
        assert_eq!(v.run.duration_ms, Some(60_600));
    }

    #[test]
    fn a_refused_approval_is_not_an_attempt() {
        let v = view(&[
            (1_100, "alice", started("risky", 1, SideEffect::Unsafe)),
            (
                1_100,
                "alice",
                failed("risky", 1, ErrorKind::Approval, None),
            ),
        ]);
        let s = v.step("risky").expect("step");
        assert!(s.tries.is_empty(), "{:?}", s.tries);
        let a = s.approval.as_ref().expect("approval");
        assert!(!a.granted);
        assert_eq!(a.by, "alice");
        assert_eq!(a.class, SideEffect::Unsafe);
        assert_eq!(s.status, Status::Failed);
        assert!(matches!(v.interventions[0].what, Act::Refusal { .. }));
    }

    #[test]
    fn a_granted_approval_belongs_to_the_attempt_it_started() {
        let v = view(&[
            (
                1_100,
                "alice",
                Event::ApprovalGranted {
                    step: "risky".into(),
                    by: "alice".into(),
                    how: "--yes".into(),
                    comment: None,
                },
            ),
            (1_101, "alice", started("risky", 1, SideEffect::Unsafe)),
        ]);
        let s = v.step("risky").expect("step");
        let a = s.tries[0].approval.as_ref().expect("approval");
        assert!(a.granted);
        assert_eq!(a.how, "--yes");
    }

    #[test]
    fn a_resume_after_a_detached_park_says_it_was_parked_not_killed() {
        let resumed = || Event::RunResumed {
            runbook_sha256: "abc".into(),
            runbook_text: None,
        };
        let v = view(&[
            (
                1_100,
                "alice",
                Event::RunDetached {
                    wake_at_ms: Some(5_000),
                    approvals: vec![],
                },
            ),
            (5_000, "alice", resumed()),
            // Stopped without a word this time.
            (6_000, "alice", started("s", 1, SideEffect::Read)),
            (9_000, "alice", resumed()),
        ]);
        let after: Vec<Stop> = v.resumes.iter().map(|r| r.after).collect();
        assert_eq!(after, [Stop::Detached, Stop::Crashed]);
    }

    #[test]
    fn cancels_refusals_and_notes_are_read_back_with_who_asked() {
        let v = view(&[
            (
                1_100,
                "worker-a",
                Event::RunNoted {
                    request: "n".into(),
                    by: "alertmanager".into(),
                    how: "alertmanager".into(),
                    note: crate::run::event::Note {
                        source: "alertmanager".into(),
                        status: "resolved".into(),
                        summary: "alert X resolved".into(),
                        detail: Value::Null,
                    },
                },
            ),
            (
                1_200,
                "worker-a",
                Event::CancelRefused {
                    request: "c1".into(),
                    by: "alertmanager".into(),
                    how: "alertmanager".into(),
                    reason: "resolved".into(),
                    why: "step `fix` (unsafe) has started".into(),
                },
            ),
            (
                1_300,
                "worker-a",
                Event::RunCancelled {
                    request: "c2".into(),
                    by: "bob".into(),
                    how: "cli".into(),
                    reason: "enough".into(),
                    only_before_changes: false,
                },
            ),
        ]);
        assert_eq!(v.notes.len(), 1);
        assert_eq!(
            (v.notes[0].by.as_str(), v.notes[0].seq),
            ("alertmanager", 2)
        );
        assert_eq!(v.notes[0].note.summary, "alert X resolved");
        let acts: Vec<(&str, &str)> = v
            .interventions
            .iter()
            .map(|i| match &i.what {
                Act::CancelRefused { by, .. } | Act::Cancel { by, .. } => {
                    (i.actor.as_str(), by.as_str())
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(acts, [("worker-a", "alertmanager"), ("worker-a", "bob")]);
    }

    #[test]
    fn any_event_sequence_folds_without_panicking() {
        // Events for steps no plan knows, out of order, before a run_started, and unreadable text.
        let mut chain = Chain::new("r");
        let mut v = RunView::new(None);
        let weird = [
            failed("ghost", 7, ErrorKind::Approval, None),
            Event::StepRecovered {
                step: "ghost".into(),
                attempt: 0,
                outcome: Recovery::Unknown,
            },
            Event::OperatorDecided {
                step: "other".into(),
                action: OperatorAction::MarkFailed,
                by: "x".into(),
            },
            Event::RunResumed {
                runbook_sha256: String::new(),
                runbook_text: None,
            },
            Event::RunFinished {
                status: RunStatus::Failed,
                error: Some("e".into()),
            },
        ];
        for (n, e) in weird.iter().enumerate() {
            v.apply(&chain.seal(i64::MIN + i64::try_from(n).unwrap_or(0), "", e));
        }
        let mut bad = chain.seal(i64::MAX, "", &weird[0]);
        bad.data = "\u{0}not json".into();
        v.apply(&bad);
        assert_eq!(v.unreadable, [bad.seq]);
        assert_eq!(v.steps.len(), 2);
        assert_eq!(v.step("other").map(|s| s.status), Some(Status::Failed));
    }
}
