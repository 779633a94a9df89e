//! What an audit reports, derived once from the run's view ([`RunView`]) and journal for every
//! renderer: the timeline (one sentence per event), decisions, actions with side effects,
//! interventions, failures, and whether the journal verifies.

use super::when::{local, rfc3339};
use crate::cli::Failure;
use crate::cli::show::{Loaded, read_values};
use crate::run::event::{Event, OperatorAction, Recovery};
use crate::run::integrity::IntegrityBreak;
use crate::run::view::{Act, Approval, Outcome, Why};
use crate::store::Store;
use runbook_steps::{ErrorKind, SideEffect};
use serde::Serialize;
use serde_json::{Map, Value};

/// A stored run read back for review, with its integrity checked.
pub struct Audited {
    pub loaded: Loaded,
    pub problem: Option<IntegrityBreak>,
}

/// When something happened, as every section gives it.
#[derive(Debug, Clone, Serialize)]
pub struct At {
    pub seq: i64,
    pub at_ms: i64,
    pub at: String,
}

impl At {
    fn new(seq: i64, at_ms: i64) -> At {
        At {
            seq,
            at_ms,
            at: rfc3339(at_ms),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    #[serde(flatten)]
    pub at: At,
    pub actor: String,
    pub kind: String,
    pub step: Option<String>,
    pub summary: String,
    /// Covered by the part of the chain that verifies.
    pub verified: bool,
    /// The event, or its stored text when it cannot be read.
    pub event: Value,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DecisionEntry {
    Branch {
        #[serde(flatten)]
        at: At,
        step: String,
        case: Option<usize>,
        condition: Option<String>,
        values: Map<String, Value>,
        taken: Vec<String>,
        not_taken: Vec<String>,
    },
    Guard {
        #[serde(flatten)]
        at: At,
        step: String,
        condition: String,
        values: Map<String, Value>,
        holds: bool,
    },
}

impl DecisionEntry {
    fn seq(&self) -> i64 {
        match self {
            DecisionEntry::Branch { at, .. } | DecisionEntry::Guard { at, .. } => at.seq,
        }
    }
}

/// An attempt of a step with side effects (`idempotent` or `unsafe`) that started.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    #[serde(flatten)]
    pub at: At,
    pub actor: String,
    pub step: String,
    pub uses: Option<String>,
    pub class: SideEffect,
    pub attempt: u32,
    pub why: Why,
    pub inputs: Value,
    pub approval: Option<Approval>,
    pub approval_required: Option<bool>,
    pub outcome: Vec<Outcome>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InterventionEntry {
    #[serde(flatten)]
    pub at: At,
    pub actor: String,
    #[serde(flatten)]
    pub act: Act,
    /// The intervention in a sentence.
    pub what: String,
    /// For a refused approval: what was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asked: Option<Approval>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailureEntry {
    #[serde(flatten)]
    pub at: At,
    /// None when the run itself ended with an error.
    pub step: Option<String>,
    pub attempt: Option<u32>,
    pub kind: Option<ErrorKind>,
    pub error: String,
    /// When another attempt followed.
    pub retry_at: Option<String>,
    /// The run's status, for the run's own error.
    pub status: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Integrity {
    pub ok: bool,
    pub events: usize,
    pub first_bad_event: Option<i64>,
    pub reason: Option<String>,
    pub line: String,
}

impl Audited {
    pub async fn load(store: &dyn Store, id: &str) -> Result<Audited, Failure> {
        let loaded = Loaded::load(store, id).await?;
        let problem = crate::run::integrity::verify(&loaded.run, &loaded.records).err();
        Ok(Audited { loaded, problem })
    }

    /// The first event not covered by a verified chain, if any.
    pub fn first_unverified(&self) -> Option<i64> {
        self.problem.as_ref().and_then(|p| p.seq)
    }

    pub fn integrity_line(&self) -> String {
        let n = self.loaded.records.len();
        match &self.problem {
            None => format!("hash chain verified: {n} events"),
            Some(IntegrityBreak {
                seq: Some(seq),
                reason,
            }) => format!("hash chain BROKEN at event {seq} of {n}: {reason}"),
            Some(IntegrityBreak { seq: None, reason }) => {
                format!("hash chain verified: {n} events, BUT {reason}")
            }
        }
    }

    pub fn integrity(&self) -> Integrity {
        Integrity {
            ok: self.problem.is_none(),
            events: self.loaded.records.len(),
            first_bad_event: self.first_unverified(),
            reason: self.problem.as_ref().map(|p| p.reason.clone()),
            line: self.integrity_line(),
        }
    }

    pub fn timeline(&self) -> Vec<Entry> {
        let bad = self.first_unverified();
        let sha = &self.loaded.run.runbook_sha256;
        let records = &self.loaded.records;
        records
            .iter()
            .enumerate()
            .map(|(n, r)| {
                let (summary, event) = match r.event() {
                    Ok(ev) => (
                        match refused_start(&ev, records.get(n + 1)) {
                            Some(asked) => asked,
                            None => summary(&ev, sha),
                        },
                        serde_json::to_value(&ev).unwrap_or(Value::Null),
                    ),
                    Err(why) => (
                        format!("unreadable event: {why}"),
                        Value::String(r.data.clone()),
                    ),
                };
                Entry {
                    at: At::new(r.seq, r.at_ms),
                    actor: r.actor.clone(),
                    kind: r.kind.clone(),
                    step: r.step.clone(),
                    summary,
                    verified: bad.is_none_or(|b| r.seq < b),
                    event,
                }
            })
            .collect()
    }

    /// Branch decisions and guards, in journal order.
    pub fn decisions(&self) -> Vec<DecisionEntry> {
        let mut out = Vec::new();
        for s in &self.loaded.view.steps {
            if let Some(d) = s.decision.as_ref().filter(|d| !d.reused) {
                out.push(DecisionEntry::Branch {
                    at: At::new(d.seq, d.at),
                    step: s.id.clone(),
                    case: d.case,
                    condition: d.condition.clone(),
                    values: d.values.clone(),
                    taken: d.taken.clone(),
                    not_taken: d.not_taken.clone(),
                });
            }
            for g in &s.guards {
                out.push(DecisionEntry::Guard {
                    at: At::new(g.seq, g.at),
                    step: s.id.clone(),
                    condition: g.condition.clone(),
                    values: g.values.clone(),
                    holds: g.holds,
                });
            }
        }
        out.sort_by_key(DecisionEntry::seq);
        out
    }

    /// Attempts of steps with side effects that started. A refused approval started nothing: it
    /// is an intervention.
    pub fn actions(&self) -> Vec<Action> {
        self.loaded
            .view
            .attempts()
            .into_iter()
            .filter(|(_, t)| t.class != SideEffect::Read)
            .map(|(s, t)| Action {
                at: At::new(t.seq, t.at),
                actor: t.actor.clone(),
                step: s.id.clone(),
                uses: (!s.uses.is_empty()).then(|| s.uses.clone()),
                class: t.class,
                attempt: t.number,
                why: t.why,
                inputs: t.inputs.clone(),
                approval: t.approval.clone(),
                approval_required: s.approval_required,
                outcome: t.outcomes.clone(),
            })
            .collect()
    }

    pub fn interventions(&self) -> Vec<InterventionEntry> {
        let v = &self.loaded.view;
        v.interventions
            .iter()
            .map(|i| {
                let asked = match &i.what {
                    Act::Refusal { step, .. } => v
                        .step(step)
                        .and_then(|s| s.approval.clone())
                        .filter(|a| !a.granted),
                    _ => None,
                };
                InterventionEntry {
                    at: At::new(i.seq, i.at),
                    actor: i.actor.clone(),
                    what: self.intervention_words(&i.what),
                    act: i.what.clone(),
                    asked,
                }
            })
            .collect()
    }

    fn intervention_words(&self, act: &Act) -> String {
        let sha = &self.loaded.run.runbook_sha256;
        match act {
            Act::Approval { step, how, .. } => format!("approved `{step}` ({how})"),
            Act::Refusal { step, reason } => format!("refused approval of `{step}`: {reason}"),
            Act::OperatorDecision { step, action } => {
                format!("{} `{step}`", operator_word(*action))
            }
            Act::Resume {
                changed_runbook, ..
            } => summary(
                &Event::RunResumed {
                    runbook_sha256: changed_runbook.clone().unwrap_or_else(|| sha.clone()),
                    runbook_text: None,
                },
                sha,
            ),
            Act::Interrupt { reason } => summary(
                &Event::RunInterrupted {
                    reason: reason.clone(),
                },
                sha,
            ),
            Act::Park { waiting_for } => summary(
                &Event::RunParked {
                    waiting_for: waiting_for.clone(),
                },
                sha,
            ),
            Act::Cancel { by, how, reason } => format!("{by} cancelled the run ({how}): {reason}"),
            Act::CancelRefused {
                by, reason, why, ..
            } => format!("{by} asked to cancel the run ({reason}); refused: {why}"),
        }
    }

    /// Failed attempts (a refused approval among them) and the run's own error, in journal order.
    pub fn failures(&self) -> Vec<FailureEntry> {
        let v = &self.loaded.view;
        let mut out: Vec<FailureEntry> = Vec::new();
        for (s, t) in v.attempts() {
            for o in &t.outcomes {
                if let Outcome::Failed {
                    kind,
                    error,
                    retry_at,
                } = o
                {
                    out.push(FailureEntry {
                        at: At::new(t.seq, t.ended_at.unwrap_or(t.at)),
                        step: Some(s.id.clone()),
                        attempt: Some(t.number),
                        kind: Some(*kind),
                        error: error.clone(),
                        retry_at: retry_at.map(rfc3339),
                        status: None,
                    });
                }
            }
        }
        for s in &v.steps {
            if let Some(a) = s.approval.as_ref().filter(|a| !a.granted) {
                out.push(FailureEntry {
                    at: At::new(a.seq, a.at),
                    step: Some(s.id.clone()),
                    attempt: Some(s.attempts),
                    kind: Some(ErrorKind::Approval),
                    error: a.how.clone(),
                    retry_at: None,
                    status: None,
                });
            }
        }
        out.sort_by_key(|f| f.at.seq);
        if let (Some(e), Some(end)) = (&v.run.error, v.run.finished_at) {
            out.push(FailureEntry {
                at: At::new(i64::try_from(v.run.events).unwrap_or(i64::MAX), end),
                step: None,
                attempt: None,
                kind: None,
                error: e.clone(),
                retry_at: None,
                status: v.run.status.map(|s| s.as_str().to_string()),
            });
        }
        out
    }
}

pub fn operator_word(a: OperatorAction) -> &'static str {
    match a {
        OperatorAction::Retry => "retry",
        OperatorAction::MarkDone => "mark done",
        OperatorAction::MarkFailed => "mark failed",
    }
}

/// The driver journals a refused approval as a `step_started` failed at once with kind
/// `approval`: such a start is said as what it was, a request that was refused.
fn refused_start(ev: &Event, next: Option<&crate::run::event::Record>) -> Option<String> {
    let Event::StepStarted {
        step,
        attempt,
        class,
        inputs,
        ..
    } = ev
    else {
        return None;
    };
    match next.map(crate::run::event::Record::event) {
        Some(Ok(Event::StepFailed {
            step: s,
            kind: ErrorKind::Approval,
            ..
        })) if s == *step => Some(format!(
            "{step}: asked for approval ({}, attempt {attempt}) with inputs {inputs}",
            class.as_str()
        )),
        _ => None,
    }
}

/// One event, said in a sentence.
pub fn summary(ev: &Event, run_sha: &str) -> String {
    let short = |h: &str| h[..12.min(h.len())].to_string();
    match ev {
        Event::RunStarted {
            runbook,
            runbook_sha256,
            params,
            engine_version,
            ..
        } => {
            let params = if params.is_empty() {
                "no params".to_string()
            } else {
                format!("params {}", read_values(params))
            };
            format!(
                "run started: {runbook} (sha256 {}), {params}; engine {engine_version}",
                short(runbook_sha256)
            )
        }
        Event::ConnectionsResolved {
            profile,
            connections,
        } => {
            let each: Vec<String> = connections
                .iter()
                .map(|(name, c)| {
                    let kind = c["kind"].as_str().unwrap_or("?");
                    let at = ["url", "base_url", "host", "uri", "context"]
                        .iter()
                        .find_map(|f| c[*f].as_str())
                        .map(|a| format!(" {a}"))
                        .unwrap_or_default();
                    format!("{name} ({kind}{at})")
                })
                .collect();
            let from = profile
                .as_ref()
                .map(|p| format!(" with profile `{p}`"))
                .unwrap_or_default();
            format!("connections{from}: {}", each.join(", "))
        }
        Event::StepPlanned { step, plan } => {
            let summary = plan["summary"].as_str().unwrap_or("planned");
            format!("{step}: planned: {summary}")
        }
        Event::StepProcess { step, group, .. } => {
            format!("{step}: started process group {}", group.pgid)
        }
        Event::ProcessFound {
            step,
            group,
            action,
            how,
        } => match (action.as_str(), how) {
            ("stopped", Some(how)) => format!(
                "{step}: its process group {} was still running after the crash: {how} before the step runs again",
                group.pgid
            ),
            ("cancelled", Some(how)) => format!(
                "{step}: its process group {} was still running after the crash: {how}, the run being cancelled",
                group.pgid
            ),
            _ => format!(
                "{step}: its process group {} was still running after the crash; left for the operator",
                group.pgid
            ),
        },
        Event::StepStarted {
            step,
            attempt,
            class,
            inputs,
            ..
        } => {
            let with = if inputs.is_null() {
                String::new()
            } else {
                format!(" with inputs {inputs}")
            };
            format!(
                "{step}: started ({}, attempt {attempt}){with}",
                class.as_str()
            )
        }
        Event::ApprovalRequested {
            step,
            attempt,
            class,
            inputs,
            approvers,
            expires_at_ms,
            plan,
            ..
        } => {
            let would = plan
                .as_ref()
                .and_then(|p| p["summary"].as_str())
                .map(|w| format!("; it {w}"))
                .unwrap_or_default();
            let who = if approvers.is_empty() {
                String::new()
            } else {
                format!(" by one of {}", approvers.join(", "))
            };
            let until = expires_at_ms
                .map(|t| format!(", until {}", local(t, false)))
                .unwrap_or_default();
            format!(
                "{step}: asks for approval{who} ({}, attempt {attempt}{until}) with inputs {inputs}{would}",
                class.as_str()
            )
        }
        Event::ApprovalGranted {
            step,
            by,
            how,
            comment,
        } => match comment {
            Some(c) => format!("{step}: approved by {by} ({how}): {c}"),
            None => format!("{step}: approved by {by} ({how})"),
        },
        Event::ApprovalDenied {
            step,
            by,
            how,
            reason,
        } => format!("{step}: denied by {by} ({how}): {reason}"),
        Event::ProbeStarted { step, probe } => format!("{step}: probe {probe} sent"),
        Event::ProbeDone {
            step,
            probe,
            holds,
            values,
            problem,
            next_at_ms,
            ..
        } => {
            let read = if values.is_empty() {
                String::new()
            } else {
                format!("; read {}", read_values(values))
            };
            let why = problem
                .as_deref()
                .map(|p| format!(": {p}"))
                .unwrap_or_default();
            format!(
                "{step}: probe {probe}: condition {holds}{why}{read}; next at {}",
                local(*next_at_ms, false)
            )
        }
        Event::RunDetached {
            wake_at_ms,
            approvals,
        } => {
            let mut what = Vec::new();
            if let Some(t) = wake_at_ms {
                what.push(format!("until {}", local(*t, false)));
            }
            if !approvals.is_empty() {
                what.push(format!("for approval of {}", approvals.join(", ")));
            }
            format!(
                "run parked {}; any process may resume it",
                what.join(" and ")
            )
        }
        Event::GuardEvaluated {
            step,
            condition,
            holds,
            values,
        } => {
            let read = if values.is_empty() {
                String::new()
            } else {
                format!("; read {}", read_values(values))
            };
            format!("{step}: guard `{condition}` is {holds}{read}")
        }
        Event::DecisionTaken {
            step,
            condition,
            values,
            taken,
            not_taken,
            ..
        } => {
            let why = match condition {
                Some(c) => format!("because `{c}` holds"),
                None => "by default (no case holds)".to_string(),
            };
            let chose = if taken.is_empty() {
                "nothing".to_string()
            } else {
                taken.join(", ")
            };
            let mut s = format!("{step}: decided {chose} {why}");
            if !values.is_empty() {
                s.push_str(&format!("; read {}", read_values(values)));
            }
            if !not_taken.is_empty() {
                s.push_str(&format!("; not taken: {}", not_taken.join(", ")));
            }
            s
        }
        Event::WaitStarted {
            step, deadline_ms, ..
        } => {
            format!("{step}: waits until {}", local(*deadline_ms, false))
        }
        Event::StepSucceeded {
            step,
            attempt,
            outputs,
            ..
        } => {
            if outputs.is_empty() {
                format!("{step}: succeeded (attempt {attempt})")
            } else {
                format!(
                    "{step}: succeeded (attempt {attempt}); outputs {}",
                    read_values(outputs)
                )
            }
        }
        Event::StepFailed {
            step,
            attempt,
            kind,
            error,
            retry_at_ms,
            ..
        } => {
            let retry = retry_at_ms
                .map(|t| format!("; retry at {}", local(t, false)))
                .unwrap_or_default();
            format!(
                "{step}: failed (attempt {attempt}): {}: {error}{retry}",
                kind.as_str()
            )
        }
        Event::StepSkipped { step, reason } => format!("{step}: skipped: {reason}"),
        Event::RunFinished { status, error } => match error {
            Some(e) => format!("run finished: {}: {e}", status.as_str()),
            None => format!("run finished: {}", status.as_str()),
        },
        Event::RunInterrupted { reason } => format!("run interrupted: {reason}"),
        Event::RunResumed { runbook_sha256, .. } => {
            if runbook_sha256 == run_sha {
                "run resumed".to_string()
            } else {
                format!(
                    "run resumed with a CHANGED runbook (sha256 {}, started with {})",
                    short(runbook_sha256),
                    short(run_sha)
                )
            }
        }
        Event::StepRecovered {
            step,
            attempt,
            outcome,
        } => match outcome {
            Recovery::Rerun => format!(
                "{step}: was running (attempt {attempt}) when the run stopped; it is run again"
            ),
            Recovery::Unknown => format!(
                "{step}: was running (attempt {attempt}) when the run stopped; outcome UNKNOWN, waits for an operator"
            ),
        },
        Event::OperatorDecided { step, action, by } => {
            format!("{step}: operator {by} decided: {}", operator_word(*action))
        }
        Event::RunParked { waiting_for } => format!(
            "run parked: waits for an operator to settle {}",
            waiting_for.join(", ")
        ),
        Event::RerunOf {
            parent_run,
            from_step,
        } => format!("re-run of {parent_run} from step {from_step}"),
        Event::RunTriggered { trigger } => format!("started by {}", trigger.describe()),
        Event::StepReused {
            step,
            from_run,
            status,
            ..
        } => format!("{step}: {status} in {from_run}, reused (not run again)"),
        Event::RunCancelled {
            by,
            how,
            reason,
            only_before_changes,
            ..
        } => {
            let only = if *only_before_changes {
                ", before any change"
            } else {
                ""
            };
            format!("run cancelled by {by} ({how}{only}): {reason}")
        }
        Event::CancelRefused {
            by,
            how,
            reason,
            why,
            ..
        } => format!("cancel asked by {by} ({how}: {reason}) refused, the run goes on: {why}"),
        Event::RunNoted { by, how, note, .. } => {
            format!("note from {} ({by}, {how}): {}", note.source, note.summary)
        }
    }
}
