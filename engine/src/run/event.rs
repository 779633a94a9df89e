//! The journal: everything a run did, as events. State is a fold of these; nothing else is the truth.

use runbook_steps::{ErrorKind, SideEffect};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        runbook: String,
        runbook_sha256: String,
        params: Map<String, Value>,
        vars: Map<String, Value>,
        engine_version: String,
    },
    /// The systems the run talks to: its connections as resolved from the runbook, the profile and
    /// the environment (secrets as `secret("NAME")` references). A resumed run uses these.
    ConnectionsResolved {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
        connections: Map<String, Value>,
    },
    /// A step was dispatched. For `idempotent` and `unsafe` steps this is the intent, committed
    /// durably before the side effect starts.
    StepStarted {
        step: String,
        attempt: u32,
        class: SideEffect,
        inputs: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_ms: Option<i64>,
    },
    /// A step waits for a person to approve it. Carries the evidence they decide on: the rendered
    /// inputs and the call's side-effect class.
    ApprovalRequested {
        step: String,
        attempt: u32,
        class: SideEffect,
        inputs: Value,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        approvers: Vec<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        distinct_from_initiator: bool,
        /// When an unanswered request counts as denied.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at_ms: Option<i64>,
        /// What the call would change, as its plugin describes it (see `runbook plan`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan: Option<Value>,
    },
    /// A step started a process group (a command). Journaled so that after the engine is killed, a
    /// resume can find the command still running rather than start a second copy beside it.
    StepProcess {
        step: String,
        attempt: u32,
        group: runbook_steps::process::Group,
    },
    /// On resume: a process group a step in flight had started was still running. `action` is
    /// `stopped` (a read or idempotent step, re-run after its old copy is stopped), `left_running`
    /// (an unsafe step: the operator decides) or `cancelled` (stopped: the run is cancelled).
    ProcessFound {
        step: String,
        group: runbook_steps::process::Group,
        action: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        how: Option<String>,
    },
    ApprovalGranted {
        step: String,
        by: String,
        how: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    /// An approval request was denied, by a person or by its timeout (`by` is then `runbook`).
    ApprovalDenied {
        step: String,
        by: String,
        how: String,
        reason: String,
    },
    /// A `when:` guard was evaluated.
    GuardEvaluated {
        step: String,
        condition: String,
        holds: bool,
        values: Map<String, Value>,
    },
    /// A `flow.branch` chose its path.
    DecisionTaken {
        step: String,
        case: Option<usize>,
        condition: Option<String>,
        values: Map<String, Value>,
        taken: Vec<String>,
        not_taken: Vec<String>,
    },
    /// A durable timer (`flow.sleep`, `flow.wait_until`) was set.
    WaitStarted {
        step: String,
        deadline_ms: i64,
        /// When the wait began (older journals: absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started_ms: Option<i64>,
    },
    /// A `flow.wait_until` probe was sent.
    ProbeStarted {
        step: String,
        probe: u64,
    },
    /// A `flow.wait_until` probe answered, and `until` was evaluated over it (or the probe failed).
    ProbeDone {
        step: String,
        probe: u64,
        holds: bool,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        values: Map<String, Value>,
        /// Why the wait goes on (the condition's values, or the probe's error).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        problem: Option<String>,
        /// Since when `until` has held without a break.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        true_since_ms: Option<i64>,
        /// When the next probe is due.
        next_at_ms: i64,
    },
    StepSucceeded {
        step: String,
        attempt: u32,
        result: Value,
        outputs: Map<String, Value>,
    },
    StepFailed {
        step: String,
        attempt: u32,
        kind: ErrorKind,
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<Value>,
        /// Set when another attempt will follow at this time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at_ms: Option<i64>,
    },
    StepSkipped {
        step: String,
        reason: String,
    },
    /// In a plan (`runbook plan`): what this step would do, instead of doing it. `plan.summary` says
    /// it in words; the rest is the plugin's detail (a command line, a request, before -> after).
    StepPlanned {
        step: String,
        plan: Value,
    },
    RunFinished {
        status: RunStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    RunInterrupted {
        reason: String,
    },
    /// A stopped run was picked up again.
    RunResumed {
        /// Hash of the runbook text the run continues with.
        runbook_sha256: String,
        /// The new text, when the operator chose to continue with a changed runbook file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        runbook_text: Option<String>,
    },
    /// A step was in flight when the run stopped: `rerun` for `read` and `idempotent` steps,
    /// `unknown` for `unsafe` ones, which wait for an operator.
    StepRecovered {
        step: String,
        attempt: u32,
        outcome: Recovery,
    },
    /// An operator settled a step whose outcome was unknown.
    OperatorDecided {
        step: String,
        action: OperatorAction,
        by: String,
    },
    /// This run re-runs `parent_run` from `from_step`; steps before it reuse that run's outcomes.
    RerunOf {
        parent_run: String,
        from_step: String,
    },
    /// What started the run when no person did: an alert, a schedule. Journaled right after
    /// `run_started` (label and annotation values are data, redacted like every event).
    RunTriggered {
        trigger: Trigger,
    },
    /// The run was cancelled (`runbook cancel`, the HTTP API, a resolved alert): the steps in flight
    /// were stopped and nothing more starts. The same commit holds each step it stopped (failed,
    /// kind `cancelled`), approvals it denied, retries it gave up, and the run's end (`failed`).
    RunCancelled {
        /// The id of the request it took (`run_requests`): a request is journaled once.
        request: String,
        by: String,
        /// Through what: `cli`, `api`, `alertmanager`.
        how: String,
        reason: String,
        /// It asked to cancel only while nothing but `read` steps had started.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        only_before_changes: bool,
    },
    /// A cancel request the run refused, and why: it asked to cancel only before any change, and a
    /// step with side effects had started. The run goes on.
    CancelRefused {
        request: String,
        by: String,
        how: String,
        reason: String,
        why: String,
    },
    /// Something told to the run while it went (an alert notification about it), journaled; it
    /// changes nothing in the run.
    RunNoted {
        request: String,
        by: String,
        how: String,
        note: Note,
    },
    /// A step's outcome taken over from the parent run, not run again.
    StepReused {
        step: String,
        from_run: String,
        /// `succeeded`, `skipped`, or `failed` (a failure the runbook lets the run continue past).
        status: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<ErrorKind>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        outputs: Map<String, Value>,
        /// A branch's chosen targets.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chosen: Option<Vec<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The run cannot go on without an operator (steps in `unknown`).
    RunParked {
        waiting_for: Vec<String>,
    },
    /// The run only waits (a timer, a probe's next time, a retry's backoff, an approval) and no process
    /// drives it: any process may continue it from the journal (`runbook resume`).
    RunDetached {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wake_at_ms: Option<i64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        approvals: Vec<String>,
    },
}

/// What started a run on its own (`run_triggered`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// An Alertmanager notification's alert (`runbook serve`'s webhook).
    Alert {
        alertname: String,
        /// `firing` or `resolved`.
        status: String,
        receiver: String,
        group_key: String,
        /// The run's de-duplication key: the group key and the parameters the labels filled.
        key: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        fingerprint: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        starts_at: String,
        #[serde(default)]
        labels: std::collections::BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        annotations: std::collections::BTreeMap<String, String>,
    },
    /// A `triggers.schedule` fire.
    Schedule {
        /// The cron expression, as written.
        expression: String,
        timezone: String,
        /// The instant this run stands for (a missed fire runs once, for the latest instant).
        fire_at_ms: i64,
    },
}

impl Trigger {
    /// One line for people: `alert MLModelDegraded (firing) from receiver runbook`.
    pub fn describe(&self) -> String {
        match self {
            Trigger::Alert {
                alertname,
                status,
                receiver,
                ..
            } => format!("alert {alertname} ({status}) from receiver {receiver}"),
            Trigger::Schedule {
                expression,
                timezone,
                ..
            } => format!("schedule `{expression}` ({timezone})"),
        }
    }
}

/// Something told to a run from outside (`run_noted`): an alert notification about it, above all
/// its `resolved`. General on purpose: `source` says who speaks, `detail` keeps what they said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    /// Who it comes from: `alertmanager` for an alert notification.
    pub source: String,
    /// What it reports, in a word a filter can match: an alert's `firing` or `resolved`.
    pub status: String,
    /// The note in a sentence, as `show` and `audit` print it.
    pub summary: String,
    /// The rest of what the source said (an alert: its name, labels, annotations, fingerprint,
    /// start and end).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recovery {
    Rerun,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorAction {
    Retry,
    MarkDone,
    MarkFailed,
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::RunStarted { .. } => "run_started",
            Event::ConnectionsResolved { .. } => "connections_resolved",
            Event::StepStarted { .. } => "step_started",
            Event::ApprovalRequested { .. } => "approval_requested",
            Event::ApprovalGranted { .. } => "approval_granted",
            Event::StepProcess { .. } => "step_process",
            Event::ProcessFound { .. } => "process_found",
            Event::ApprovalDenied { .. } => "approval_denied",
            Event::ProbeStarted { .. } => "probe_started",
            Event::ProbeDone { .. } => "probe_done",
            Event::RunDetached { .. } => "run_detached",
            Event::GuardEvaluated { .. } => "guard_evaluated",
            Event::DecisionTaken { .. } => "decision_taken",
            Event::WaitStarted { .. } => "wait_started",
            Event::StepSucceeded { .. } => "step_succeeded",
            Event::StepFailed { .. } => "step_failed",
            Event::StepSkipped { .. } => "step_skipped",
            Event::StepPlanned { .. } => "step_planned",
            Event::RunFinished { .. } => "run_finished",
            Event::RunInterrupted { .. } => "run_interrupted",
            Event::RunResumed { .. } => "run_resumed",
            Event::StepRecovered { .. } => "step_recovered",
            Event::OperatorDecided { .. } => "operator_decided",
            Event::RunParked { .. } => "run_parked",
            Event::RerunOf { .. } => "rerun_of",
            Event::RunTriggered { .. } => "run_triggered",
            Event::StepReused { .. } => "step_reused",
            Event::RunCancelled { .. } => "run_cancelled",
            Event::CancelRefused { .. } => "cancel_refused",
            Event::RunNoted { .. } => "run_noted",
        }
    }

    pub fn step(&self) -> Option<&str> {
        match self {
            Event::StepStarted { step, .. }
            | Event::ApprovalRequested { step, .. }
            | Event::ApprovalGranted { step, .. }
            | Event::StepProcess { step, .. }
            | Event::ProcessFound { step, .. }
            | Event::ApprovalDenied { step, .. }
            | Event::ProbeStarted { step, .. }
            | Event::ProbeDone { step, .. }
            | Event::GuardEvaluated { step, .. }
            | Event::DecisionTaken { step, .. }
            | Event::WaitStarted { step, .. }
            | Event::StepSucceeded { step, .. }
            | Event::StepFailed { step, .. }
            | Event::StepSkipped { step, .. }
            | Event::StepPlanned { step, .. }
            | Event::StepRecovered { step, .. }
            | Event::StepReused { step, .. }
            | Event::OperatorDecided { step, .. } => Some(step),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
    /// Stopped until an operator settles steps whose outcome is unknown.
    Waiting,
    /// Only waiting (a time, an approval), with no process driving it; `runbook resume` continues it.
    Parked,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Waiting => "waiting",
            RunStatus::Parked => "parked",
        }
    }

    pub const ALL: [RunStatus; 6] = [
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Interrupted,
        RunStatus::Waiting,
        RunStatus::Parked,
    ];

    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// An event as stored: its place in the run's chain, when, who, and the hash that links it. Decoded
/// from an `events` row by either store, or from a page of the HTTP API's journal (which names the
/// run once per page, not per event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Record {
    #[serde(default)]
    pub run_id: String,
    pub seq: i64,
    #[sqlx(rename = "at")]
    pub at_ms: i64,
    pub actor: String,
    pub kind: String,
    #[sqlx(rename = "step_id")]
    pub step: Option<String>,
    /// The event as JSON text, exactly as stored and hashed.
    pub data: String,
    pub prev_hash: String,
    pub hash: String,
}

impl Record {
    pub fn event(&self) -> Result<Event, serde_json::Error> {
        serde_json::from_str(&self.data)
    }
}

/// The hash of an event: over the previous hash and every stored field, so editing any of them, or
/// removing or reordering events, breaks the chain from there on.
pub fn chain_hash(
    prev_hash: &str,
    run_id: &str,
    seq: i64,
    at_ms: i64,
    actor: &str,
    data: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        prev_hash,
        run_id,
        &seq.to_string(),
        &at_ms.to_string(),
        actor,
        data,
    ] {
        h.update(part.as_bytes());
        // A separator that cannot appear unescaped in JSON text keeps fields from running together.
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

/// The hash that precedes a run's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Numbers events and links them; one per run being driven.
#[derive(Debug, Clone)]
pub struct Chain {
    pub run_id: String,
    pub next_seq: i64,
    pub last_hash: String,
}

impl Chain {
    pub fn new(run_id: &str) -> Chain {
        Chain {
            run_id: run_id.to_string(),
            next_seq: 1,
            last_hash: GENESIS.to_string(),
        }
    }

    pub fn seal(&mut self, at_ms: i64, actor: &str, event: &Event) -> Record {
        // Serializing our own enum of plain data cannot fail.
        let data = serde_json::to_string(event).unwrap_or_else(|e| {
            serde_json::json!({"type": "unserializable", "error": e.to_string()}).to_string()
        });
        let seq = self.next_seq;
        let hash = chain_hash(&self.last_hash, &self.run_id, seq, at_ms, actor, &data);
        let rec = Record {
            run_id: self.run_id.clone(),
            seq,
            at_ms,
            actor: actor.to_string(),
            kind: event.kind().to_string(),
            step: event.step().map(str::to_string),
            data,
            prev_hash: std::mem::replace(&mut self.last_hash, hash.clone()),
            hash,
        };
        self.next_seq += 1;
        rec
    }
}

pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Where a stored chain stops verifying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: String,
}

/// Recomputes a run's hash chain from its stored records (in `seq` order) and names the first event
/// that does not match.
pub fn verify_chain(records: &[Record]) -> Result<(), ChainBreak> {
    let mut prev = GENESIS.to_string();
    for (expected_seq, r) in (1..).zip(records) {
        if r.seq != expected_seq {
            return Err(ChainBreak {
                seq: r.seq,
                reason: format!(
                    "expected event {expected_seq}, found {} (an event is missing)",
                    r.seq
                ),
            });
        }
        if r.prev_hash != prev {
            return Err(ChainBreak {
                seq: r.seq,
                reason: "its link to the previous event does not match".to_string(),
            });
        }
        let h = chain_hash(&prev, &r.run_id, r.seq, r.at_ms, &r.actor, &r.data);
        if h != r.hash {
            return Err(ChainBreak {
                seq: r.seq,
                reason: "its content does not match its hash (edited after it was written)"
                    .to_string(),
            });
        }
        prev = h;
    }
    Ok(())
}

/// The runbook text a run currently follows: the stored one, unless a resume switched to a newer one.
pub fn current_text<'a>(stored: &'a str, events: &'a [Event]) -> &'a str {
    events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::RunResumed {
                runbook_text: Some(t),
                ..
            } => Some(t.as_str()),
            _ => None,
        })
        .unwrap_or(stored)
}
