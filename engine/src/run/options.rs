//! What a caller configures a run's driver with, and what it gets back: options, the observer (live
//! view), in-process approval answers, fault injection for the crash tests, the outcome.

use super::event::{Event, Record, RunStatus};
use crate::runbook::plan::Plan;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// An answer to an approval request, from a terminal, a flag, or another process (`runbook approve`).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub step: String,
    /// The attempt the request was for; `None` answers whichever request is open.
    pub attempt: Option<u32>,
    pub approve: bool,
    pub by: String,
    /// `terminal`, `--yes`, `cli`, ...
    pub how: String,
    /// The approver's comment, or the reason of a denial.
    pub comment: Option<String>,
}

/// What the driver tells the outside world while it works: the live view. Called on the driver's task;
/// an implementation must not block (a person reading a prompt must not stop the lease's renewal).
pub trait Observer: Send {
    fn on_event(&mut self, _plan: &Plan, _record: &Record, _event: &Event) {}
    fn on_progress(&mut self, _step: &str, _line: &str) {}
}

/// An observer that watches nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// Fault injection for the crash tests: kill the process just before or after its K-th journal commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    Before(u64),
    After(u64),
}

impl CrashPoint {
    /// `before:K` or `after:K` (the value of `RUNBOOK_TEST_CRASH`).
    pub fn parse(v: &str) -> Option<CrashPoint> {
        let (when, k) = v.split_once(':')?;
        let k = k.parse().ok()?;
        match when {
            "before" => Some(CrashPoint::Before(k)),
            "after" => Some(CrashPoint::After(k)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub actor: String,
    pub max_parallel: usize,
    /// Park the run (release it, return `Parked`) as soon as it only waits, instead of waiting here.
    pub detach: bool,
    /// Stops the run: steps in flight are dropped (their processes killed) and the run is recorded
    /// as interrupted.
    pub cancel: CancellationToken,
    pub crash: Option<CrashPoint>,
    /// The profile whose connection settings override the runbook's.
    pub profile: Option<super::connections::Profile>,
    /// A plan (`runbook plan`): read steps run, changes and waits are only described.
    pub plan: bool,
    /// The lease holder to drive as (a worker drives under the name its claim took the lease with);
    /// by default, this process with a fresh nonce.
    pub holder: Option<super::lease::Holder>,
    /// Once cancelled, a detaching run parks, due at once, as soon as no call is in flight, instead
    /// of starting more steps: a worker that shuts down hands its runs to the others this way.
    pub drain: CancellationToken,
    /// When `holder`'s claim took the run's lease (a worker's, epoch ms): a resume drives under that
    /// lease while it has most of its time left, instead of taking it again (a commit saved per run).
    pub claimed_at_ms: Option<i64>,
}

impl RunOptions {
    pub fn new(actor: &str) -> RunOptions {
        RunOptions {
            actor: actor.to_string(),
            max_parallel: 8,
            detach: false,
            cancel: CancellationToken::new(),
            crash: None,
            profile: None,
            plan: false,
            holder: None,
            drain: CancellationToken::new(),
            claimed_at_ms: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run_id: String,
    pub status: RunStatus,
    /// When the run first started (a resumed run's duration counts from there).
    pub started_at: i64,
}

/// How the driver hears from the outside: the live view, and approval answers given in this process.
pub struct Hooks {
    pub observer: Box<dyn Observer>,
    pub answers: Option<mpsc::UnboundedReceiver<Answer>>,
}

impl Hooks {
    pub fn quiet() -> Hooks {
        Hooks {
            observer: Box::new(Quiet),
            answers: None,
        }
    }
}
