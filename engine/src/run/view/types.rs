//! The vocabulary of the read model: what a run, a step, an attempt, a decision or an intervention
//! looks like to people and to JSON consumers. The fold that fills it is in the parent module.

use crate::run::event::{OperatorAction, RunStatus};
use crate::run::state::Status;
use runbook_steps::{ErrorKind, SideEffect};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The run's header: its row's fields, the ones the journal adds, and durations.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunSummary {
    pub id: String,
    pub runbook: String,
    pub title: Option<String>,
    pub source_path: Option<String>,
    pub runbook_sha256: String,
    pub params: Value,
    pub status: Option<RunStatus>,
    pub actor: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// From the first start to the end, resumes and the time the run was down included.
    pub duration_ms: Option<i64>,
    pub parent_run: Option<String>,
    /// The step a re-run started again from.
    pub rerun_from: Option<String>,
    /// What started the run when no person did (an alert, a schedule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<crate::run::event::Trigger>,
    pub engine_version: Option<String>,
    /// Why the run ended, when it ended with an error.
    pub error: Option<String>,
    pub events: usize,
}

/// A resume: when, by whom, and how long the run had been stopped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resume {
    pub seq: i64,
    pub at: i64,
    pub by: String,
    /// From the run's last event before it stopped to the resume (unknown to a view that starts
    /// at the resume).
    pub down_ms: Option<i64>,
    /// How the run had stopped.
    pub after: Stop,
    /// The runbook hash the run continues with, when it differs from the one it started with.
    pub changed_runbook: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// Interrupted (Ctrl-C), and journaled so.
    Interrupted,
    /// Parked, waiting for an operator.
    Parked,
    /// Parked by `--detach`: it only waited (a timer, an approval), and said so.
    Detached,
    /// Stopped without a word: the process was killed or the machine went down.
    Crashed,
}

/// One step as people read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepView {
    pub id: String,
    /// The plugin, when the runbook the run follows still has this step.
    pub uses: String,
    #[serde(serialize_with = "status_str", deserialize_with = "status_from_str")]
    pub status: Status,
    /// Attempts made (the number of the last one).
    pub attempts: u32,
    /// The first start and the last finish.
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The side-effect class of the last attempt.
    pub class: Option<SideEffect>,
    /// The last error, while the step is failed or waiting to retry.
    pub error: Option<String>,
    pub error_kind: Option<ErrorKind>,
    pub skip_reason: Option<String>,
    pub decision: Option<Decision>,
    /// Every evaluation of the step's `when:` (one per attempt).
    pub guards: Vec<Guard>,
    /// The last approval asked for, granted or refused.
    pub approval: Option<Approval>,
    /// The last operator decision.
    pub operator: Option<Operator>,
    pub outputs: Option<Map<String, Value>>,
    /// The run whose outcome this step took over (re-runs).
    pub reused_from: Option<String>,
    /// Whether the runbook requires approval for this step (unknown for a step it no longer has).
    pub approval_required: Option<bool>,
    /// In a plan: what the step would do (`summary` and the plugin's detail).
    pub planned: Option<Value>,
    /// The process group of an unsafe step that was still running when its run was resumed.
    pub still_running: Option<u32>,
    pub tries: Vec<Attempt>,
    /// Why the next attempt will happen, as the events before it say; kept apart from `tries`
    /// so a view that starts mid-run (the live view of a resume) still tells a re-run.
    #[serde(skip)]
    pub(super) next: Option<Why>,
}

fn action_words<S: serde::Serializer>(a: &OperatorAction, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(a.words())
}

fn status_str<S: serde::Serializer>(s: &Status, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

fn status_from_str<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Status, D::Error> {
    let s = String::deserialize(de)?;
    Status::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown step status `{s}`")))
}

fn action_from_words<'de, D: serde::Deserializer<'de>>(de: D) -> Result<OperatorAction, D::Error> {
    let s = String::deserialize(de)?;
    OperatorAction::ALL
        .into_iter()
        .find(|a| a.words() == s)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown operator decision `{s}`")))
}

/// One attempt of a step: a `step_started` and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub seq: i64,
    pub number: u32,
    pub why: Why,
    pub at: i64,
    pub actor: String,
    pub class: SideEffect,
    pub inputs: Value,
    /// The approval this attempt was granted (a refused one never starts an attempt).
    pub approval: Option<Approval>,
    /// What became of it, in order (an `unknown` attempt later settled by an operator has two);
    /// empty while it runs.
    pub outcomes: Vec<Outcome>,
    pub ended_at: Option<i64>,
}

impl Attempt {
    /// Its latest outcome.
    pub fn outcome(&self) -> &Outcome {
        self.outcomes.last().unwrap_or(&Outcome::Running)
    }

    pub(super) fn settle(&mut self, o: Outcome, at: Option<i64>) {
        self.outcomes.push(o);
        if at.is_some() {
            self.ended_at = at;
        }
    }
}

/// Why an attempt happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    First,
    /// The previous attempt failed and the step's `retry` allowed another.
    Retry,
    /// The previous attempt was in flight when the run stopped; it was run again on resume.
    CrashRerun,
    /// An operator asked for the step to run again after its outcome was unknown.
    OperatorRetry,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Running,
    Succeeded,
    Failed {
        kind: ErrorKind,
        error: String,
        /// When another attempt follows.
        retry_at: Option<i64>,
    },
    /// In flight when the run stopped; run again on resume.
    Interrupted,
    /// In flight when the run stopped, and `unsafe`: it may or may not have acted.
    Unknown,
    /// Settled by an operator after it was unknown.
    MarkedDone {
        by: String,
    },
    MarkedFailed {
        by: String,
    },
    /// An operator asked for it to run again.
    RetriedByOperator {
        by: String,
    },
    /// Left without an outcome, and a later attempt started.
    Superseded,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    pub seq: i64,
    pub at: i64,
    pub case: Option<usize>,
    /// The condition that held; none for the default (or a reused decision).
    pub condition: Option<String>,
    pub values: Map<String, Value>,
    pub taken: Vec<String>,
    pub not_taken: Vec<String>,
    /// Taken over from the parent run of a re-run.
    pub reused: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Guard {
    pub seq: i64,
    pub at: i64,
    pub condition: String,
    pub holds: bool,
    pub values: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub seq: i64,
    pub at: i64,
    pub granted: bool,
    pub by: String,
    /// How it was granted (`terminal`, `--yes`, ...), or why it was refused.
    pub how: String,
    /// What was asked for: the class and rendered inputs of the step.
    pub class: SideEffect,
    pub inputs: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Operator {
    pub seq: i64,
    pub at: i64,
    /// In words: `retry`, `marked done`, `marked failed`.
    #[serde(
        serialize_with = "action_words",
        deserialize_with = "action_from_words"
    )]
    pub action: OperatorAction,
    pub by: String,
}

/// Something a person did to the run, in journal order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Intervention {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    #[serde(flatten)]
    pub what: Act,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Act {
    Approval {
        step: String,
        by: String,
        how: String,
    },
    Refusal {
        step: String,
        reason: String,
    },
    OperatorDecision {
        step: String,
        action: OperatorAction,
    },
    Resume {
        down_ms: Option<i64>,
        changed_runbook: Option<String>,
    },
    Interrupt {
        reason: String,
    },
    Park {
        waiting_for: Vec<String>,
    },
    /// The run was cancelled (`by` asked; the actor is the process that journaled it).
    Cancel {
        by: String,
        how: String,
        reason: String,
    },
    /// A cancel the run refused, and why; it went on.
    CancelRefused {
        by: String,
        how: String,
        reason: String,
        why: String,
    },
}

/// Something told to the run from outside (`run_noted`): an alert notification about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Noted {
    pub seq: i64,
    pub at: i64,
    pub by: String,
    pub how: String,
    #[serde(flatten)]
    pub note: crate::run::event::Note,
}

impl OperatorAction {
    pub const ALL: [OperatorAction; 3] = [
        OperatorAction::Retry,
        OperatorAction::MarkDone,
        OperatorAction::MarkFailed,
    ];

    /// The decision in words, e.g. `marked done`.
    pub fn words(self) -> &'static str {
        match self {
            OperatorAction::Retry => "retry",
            OperatorAction::MarkDone => "marked done",
            OperatorAction::MarkFailed => "marked failed",
        }
    }
}
