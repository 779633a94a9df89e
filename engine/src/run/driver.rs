//! The driver: an owned task that performs what [`decide`](super::decide) returns, runs plugins, and
//! journals every transition. What each step journals is decided by the pure rules in
//! [`step`](super::step); the driver adds only time, I/O and the one lease it holds.
//!
//! Durability (DESIGN §5): the intent (`StepStarted`) of an `idempotent` or `unsafe` step is committed
//! with fsync before the side effect starts. Everything else rides on cheaper commits that survive a
//! killed process, and transitions that happen together share one transaction.

use super::decide::{Action, Next, decide};
use super::event::{Chain, Event, Record, RunStatus, now_ms};
use super::lease::{self, Holder};
use super::state::{RunState, Status};
use super::step::{Effect, Prep, Prepared};
use crate::runbook::plan::Plan;
use crate::store::{Durability, Store, StoreError};
use runbook_steps::{ErrorKind, Runner, StepContext, StepError};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Setup(String),
    /// The run cannot be driven as asked; nothing was written.
    #[error("{0}")]
    Refused(String),
}

impl From<lease::LeaseError> for DriverError {
    fn from(e: lease::LeaseError) -> DriverError {
        match e {
            lease::LeaseError::Store(s) => DriverError::Store(s),
            held => DriverError::Refused(held.to_string()),
        }
    }
}

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
}

impl RunOptions {
    pub fn new(actor: &str) -> RunOptions {
        RunOptions {
            actor: actor.to_string(),
            max_parallel: 8,
            detach: false,
            cancel: CancellationToken::new(),
            crash: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run_id: String,
    pub status: RunStatus,
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

enum Done {
    Step(usize, u32, Result<Value, StepError>),
    Probe(usize, Result<Value, StepError>),
}

/// How long the bookkeeping of `read` steps may wait to share a commit with later transitions.
/// Anything that precedes a side effect is committed (with fsync) before it regardless, so a crash
/// within this window can only cost re-running reads.
const GROUP_COMMIT: Duration = Duration::from_millis(10);

/// How often a run waiting for approval looks for answers given by other processes.
const ANSWER_POLL: Duration = Duration::from_secs(1);

pub struct Driver {
    pub(super) plan: Arc<Plan>,
    pub(super) store: Arc<dyn Store>,
    pub(super) engine: crate::Engine,
    pub(super) opts: RunOptions,
    observer: Box<dyn Observer>,
    answers: Option<mpsc::UnboundedReceiver<Answer>>,
    pub(super) chain: Chain,
    pub(super) state: RunState,
    pending: Vec<Record>,
    /// When the oldest uncommitted event was emitted.
    pending_since: Option<tokio::time::Instant>,
    /// params, vars, connections, run (and env, if anything reads it): the context every step shares.
    base: Map<String, Value>,
    tasks: JoinSet<Done>,
    progress_tx: mpsc::UnboundedSender<(String, String)>,
    progress_rx: mpsc::UnboundedReceiver<(String, String)>,
    pub(super) holder: Holder,
    /// Masks secrets before an event is sealed.
    redactor: super::redact::Redactor,
    /// Who started the run (an approval may have to come from someone else).
    initiator: String,
    commits: u64,
}

/// A driver's starting point: the plan, the journal's position, the folded state and shared context.
pub(super) struct Position {
    pub plan: Arc<Plan>,
    pub chain: Chain,
    pub state: RunState,
    pub base: Map<String, Value>,
    pub redactor: super::redact::Redactor,
    pub initiator: String,
}

impl Driver {
    pub(super) fn new(
        store: Arc<dyn Store>,
        engine: &crate::Engine,
        opts: RunOptions,
        hooks: Hooks,
        at: Position,
    ) -> Driver {
        let (progress_tx, progress_rx) = mpsc::unbounded_channel();
        Driver {
            plan: at.plan,
            store,
            engine: engine.clone(),
            opts,
            observer: hooks.observer,
            answers: hooks.answers,
            chain: at.chain,
            state: at.state,
            pending: Vec::new(),
            pending_since: None,
            base: at.base,
            tasks: JoinSet::new(),
            progress_tx,
            progress_rx,
            holder: Holder::this_process(),
            redactor: at.redactor,
            initiator: at.initiator,
            commits: 0,
        }
    }

    pub(super) fn observe(&mut self, record: &Record, event: &Event) {
        self.observer.on_event(&self.plan, record, event);
    }

    pub(super) fn emit(&mut self, event: Event) {
        self.emit_at(event, now_ms());
    }

    /// Journals an event as of `at_ms`: events decided together carry the instant they were decided
    /// at, so a timer's journal says exactly "started at T, due at T + d".
    fn emit_at(&mut self, event: Event, at_ms: i64) {
        // What is journaled is what the state sees, so a resumed run reads exactly what a live one did.
        let mut event = event;
        self.redactor.event(&mut event);
        let rec = self.chain.seal(at_ms, &self.opts.actor, &event);
        self.state.apply(&self.plan, &event);
        self.observer.on_event(&self.plan, &rec, &event);
        if self.pending.is_empty() {
            self.pending_since = Some(tokio::time::Instant::now());
        }
        self.pending.push(rec);
    }

    pub(super) async fn flush(&mut self, durability: Durability) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.commits += 1;
        if self.opts.crash == Some(CrashPoint::Before(self.commits)) {
            std::process::abort();
        }
        self.store.append(&self.pending, durability).await?;
        if self.opts.crash == Some(CrashPoint::After(self.commits)) {
            std::process::abort();
        }
        self.pending.clear();
        self.pending_since = None;
        Ok(())
    }

    fn prep(&self) -> Prep<'_> {
        Prep {
            plan: &self.plan,
            state: &self.state,
            expr: &self.engine.expr,
            registry: &self.engine.registry,
            base: &self.base,
        }
    }

    /// Drives the run while holding its lease, and lets the lease go however driving ends.
    pub(super) async fn drive_leased(mut self) -> Result<RunOutcome, DriverError> {
        let result = self.drive().await;
        // A lease left behind only delays the next resume until it expires.
        let _ = self
            .store
            .release_lease(&self.chain.run_id, &self.holder.encode())
            .await;
        result.map(|status| RunOutcome {
            run_id: self.chain.run_id.clone(),
            status,
        })
    }

    async fn drive(&mut self) -> Result<RunStatus, DriverError> {
        let mut heartbeat = tokio::time::interval(lease::RENEW);
        heartbeat.tick().await;
        let mut poll = tokio::time::interval(ANSWER_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.take_answers_given_here();
            let next = decide(
                &self.plan,
                &self.state,
                now_ms(),
                self.opts.max_parallel.max(1),
            );
            if let Some(status) = self.perform(&next).await? {
                return Ok(status);
            }
            if !next.actions.is_empty() {
                continue;
            }
            if self.opts.detach && self.tasks.is_empty() && next.only_waits() {
                // An answer given while the run was parked must be taken, or it would park forever.
                let seq = self.chain.next_seq;
                if !next.awaiting_approval.is_empty() {
                    self.take_answers_given_elsewhere().await?;
                }
                if self.chain.next_seq != seq {
                    continue;
                }
                return self.detach(&next).await;
            }
            // Nothing more can happen until a step finishes, a timer fires or an answer comes.
            // Commit what happened if it has waited long enough; otherwise let it share a commit
            // with what comes next.
            let flush_at = self.pending_since.map(|t| t + GROUP_COMMIT);
            if flush_at.is_some_and(|t| t <= tokio::time::Instant::now()) {
                self.flush(Durability::Process).await?;
                continue;
            }
            let wake = next.wake_at_ms.map(|at| {
                let ms = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
                tokio::time::Instant::now() + Duration::from_millis(ms)
            });
            let asking = !next.awaiting_approval.is_empty();
            tokio::select! {
                joined = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Some(joined) = joined {
                        self.finished(joined)?;
                        // Steps that finished together are journaled together.
                        while let Some(more) = self.tasks.try_join_next() {
                            self.finished(more)?;
                        }
                    }
                }
                _ = async { match wake { Some(w) => tokio::time::sleep_until(w).await, None => std::future::pending().await } } => {}
                _ = async { match flush_at { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                    self.flush(Durability::Process).await?;
                }
                _ = heartbeat.tick() => self.renew_lease().await?,
                _ = poll.tick(), if asking => {
                    // Answers must be acted on from the journal, so the request itself is committed first.
                    self.flush(Durability::Process).await?;
                    self.take_answers_given_elsewhere().await?;
                }
                Some(answer) = async { match self.answers.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                    self.answer(answer);
                }
                Some((step, line)) = self.progress_rx.recv() => {
                    self.observer.on_progress(&step, &line);
                }
                _ = self.opts.cancel.cancelled() => {
                    // Dropping the tasks kills child processes (kill_on_drop); steps in flight have no
                    // outcome in the journal, which is exactly what a resume needs to see.
                    self.tasks.abort_all();
                    self.emit(Event::RunInterrupted { reason: "interrupted (Ctrl-C)".to_string() });
                    self.flush(Durability::Power).await?;
                    return Ok(RunStatus::Interrupted);
                }
            }
        }
    }

    async fn renew_lease(&mut self) -> Result<(), DriverError> {
        let until = now_ms() + lease::TTL_MS;
        let name = self.holder.encode();
        if !self
            .store
            .renew_lease(&self.chain.run_id, &name, until)
            .await?
        {
            // Someone else drives the run now; acting on would do everything twice.
            self.tasks.abort_all();
            return Err(DriverError::Refused(format!(
                "lost the lease of run {} to another process; stopped",
                self.chain.run_id
            )));
        }
        Ok(())
    }

    /// Performs the scheduler's actions; `Some` when the run ends or parks.
    async fn perform(&mut self, next: &Next) -> Result<Option<RunStatus>, DriverError> {
        for action in &next.actions {
            let now = now_ms();
            match action {
                Action::Skip(i, reason) => self.emit(Event::StepSkipped {
                    step: self.plan.id(*i).to_string(),
                    reason: reason.clone(),
                }),
                Action::Start(i) => {
                    let p = self.prep().start(*i, now);
                    self.carry_out(*i, p, now).await?;
                }
                Action::Wake(i) => {
                    let e = self.prep().wake(*i, now);
                    self.emit_at(e, now);
                }
                Action::Probe(i) => {
                    let p = self.prep().probe(*i, now);
                    self.carry_out(*i, p, now).await?;
                }
                Action::Expire(i) => {
                    let e = self.prep().expire(*i, now);
                    self.emit_at(e, now);
                }
                Action::ExpireApproval(i) => {
                    let e = self.prep().expire_approval(*i);
                    self.emit_at(e, now);
                }
                Action::Park(waiting) => {
                    let waiting_for = waiting
                        .iter()
                        .map(|&i| self.plan.id(i).to_string())
                        .collect();
                    self.emit(Event::RunParked { waiting_for });
                    self.flush(Durability::Power).await?;
                    return Ok(Some(RunStatus::Waiting));
                }
                Action::Finish(status) => {
                    self.finish(*status).await?;
                    return Ok(Some(*status));
                }
            }
        }
        Ok(None)
    }

    async fn finish(&mut self, status: RunStatus) -> Result<(), DriverError> {
        // Retries that an abort cancelled end as the failures they were.
        let cancelled: Vec<usize> = self
            .state
            .retrying
            .iter()
            .map(|&r| self.plan.order[r])
            .collect();
        for i in cancelled {
            let (kind, error) = self.state.steps[i]
                .error
                .clone()
                .unwrap_or((ErrorKind::Other, String::new()));
            self.emit(Event::StepFailed {
                step: self.plan.id(i).to_string(),
                attempt: self.state.steps[i].attempt,
                kind,
                error: format!("{error} (no retry: the run was aborted)"),
                detail: None,
                retry_at_ms: None,
            });
        }
        self.emit(Event::RunFinished {
            status,
            error: None,
        });
        self.flush(Durability::Process).await?;
        Ok(())
    }

    /// The run only waits: journal what for, and let any process continue it.
    async fn detach(&mut self, next: &Next) -> Result<RunStatus, DriverError> {
        let approvals = next
            .awaiting_approval
            .iter()
            .map(|&i| self.plan.id(i).to_string())
            .collect();
        self.emit(Event::RunDetached {
            wake_at_ms: next.wake_at_ms,
            approvals,
        });
        self.flush(Durability::Power).await?;
        Ok(RunStatus::Parked)
    }

    /// Journals what a step's rules decided and performs its effect.
    async fn carry_out(&mut self, i: usize, p: Prepared, now: i64) -> Result<(), DriverError> {
        for e in p.events {
            self.emit_at(e, now);
        }
        match p.effect {
            Effect::None => {}
            Effect::Call {
                inputs,
                class,
                deadline_ms,
                timeout_text,
            } => {
                if class != runbook_steps::SideEffect::Read {
                    // The intent must be on disk before the side effect can happen.
                    self.flush(Durability::Power).await?;
                }
                let uses = self.plan.steps[i].def.uses.name.clone();
                let attempt = self.state.steps[i].attempt;
                let call = self.call(i, uses, inputs, deadline_ms, timeout_text);
                self.tasks
                    .spawn(async move { Done::Step(i, attempt, call.await) });
            }
            Effect::Probe {
                uses,
                input,
                deadline_ms,
            } => {
                let call = self.call(i, uses, input, Some(deadline_ms), None);
                self.tasks.spawn(async move {
                    let r = call.await;
                    Done::Probe(i, r)
                });
            }
        }
        Ok(())
    }

    /// A plugin call bounded by a deadline, as a future that owns what it needs.
    fn call(
        &self,
        i: usize,
        uses: String,
        inputs: Value,
        deadline_ms: Option<i64>,
        timeout_text: Option<String>,
    ) -> impl std::future::Future<Output = Result<Value, StepError>> + Send + 'static {
        let registry = Arc::clone(&self.engine.registry);
        let sctx = StepContext {
            run_id: self.chain.run_id.clone(),
            step_id: self.plan.id(i).to_string(),
            progress: Some(self.progress_tx.clone()),
        };
        async move {
            let Some(Runner::Plugin(plugin)) = registry.get(&uses) else {
                return Err(StepError::new(
                    ErrorKind::Input,
                    format!("plugin `{uses}` is not available"),
                ));
            };
            let fut = plugin.run(inputs, &sctx);
            let Some(deadline) = deadline_ms else {
                return fut.await;
            };
            let left = Duration::from_millis(
                u64::try_from(deadline.saturating_sub(now_ms())).unwrap_or(0),
            );
            match tokio::time::timeout(left, fut).await {
                Ok(r) => r,
                Err(_) => Err(StepError::new(
                    ErrorKind::Timeout,
                    format!(
                        "timed out after {}",
                        timeout_text.unwrap_or_else(|| runbook_steps::duration::human(left))
                    ),
                )),
            }
        }
    }

    fn finished(
        &mut self,
        joined: Result<Done, tokio::task::JoinError>,
    ) -> Result<(), DriverError> {
        let done = match joined {
            Ok(d) => d,
            // A panicking plugin is a bug; it must not take the run's journal with it.
            Err(e) => return Err(DriverError::Setup(format!("a step task failed: {e}"))),
        };
        let now = now_ms();
        match done {
            Done::Step(i, attempt, Ok(result)) => {
                let e = self.prep().succeed(i, attempt, result, now);
                self.emit_at(e, now);
            }
            Done::Step(i, attempt, Err(err)) => {
                let e = self.prep().fail(i, attempt, err, now);
                self.emit_at(e, now);
            }
            Done::Probe(i, outcome) => {
                let events = self.prep().probe_done(i, outcome, now);
                for e in events {
                    if let Event::ProbeDone {
                        probe,
                        problem: Some(p),
                        ..
                    } = &e
                    {
                        let line = format!("probe {probe}: {p}");
                        self.observer.on_progress(self.plan.id(i), &line);
                    }
                    self.emit_at(e, now);
                }
            }
        }
        Ok(())
    }

    fn take_answers_given_here(&mut self) {
        let mut got = Vec::new();
        if let Some(rx) = self.answers.as_mut() {
            while let Ok(a) = rx.try_recv() {
                got.push(a);
            }
        }
        for a in got {
            self.answer(a);
        }
    }

    async fn take_answers_given_elsewhere(&mut self) -> Result<(), DriverError> {
        let answers = self.store.approval_answers(&self.chain.run_id).await?;
        for a in answers {
            self.answer(a);
        }
        Ok(())
    }

    /// Journals an answer if it answers an open request and its author may give it; anything else
    /// (a late answer, an answer to an earlier attempt) is ignored.
    fn answer(&mut self, a: Answer) {
        let Some(&i) = self.plan.index.get(&a.step) else {
            return;
        };
        let st = &self.state.steps[i];
        if st.status != Status::AwaitingApproval
            || a.attempt
                .is_some_and(|n| Some(n) != st.approval.requested_for)
        {
            return;
        }
        let policy = &self.plan.steps[i].def.approval_policy;
        if let Err(why) = policy.may_answer(&a.by, &self.initiator) {
            self.observer
                .on_progress(&a.step, &format!("answer by {} ignored: {why}", a.by));
            return;
        }
        let event = if a.approve {
            Event::ApprovalGranted {
                step: a.step,
                by: a.by,
                how: a.how,
                comment: a.comment,
            }
        } else {
            Event::ApprovalDenied {
                step: a.step,
                by: a.by,
                how: a.how,
                reason: a.comment.unwrap_or_else(|| "denied".to_string()),
            }
        };
        self.emit(event);
    }
}
