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
use super::state::RunState;
use super::step::{Effect, Prep, Prepared};
use crate::runbook::plan::Plan;
use crate::store::{Durability, Store, StoreError};
use runbook_steps::{ErrorKind, StepError};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

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

pub use super::options::{Answer, CrashPoint, Hooks, Observer, Quiet, RunOptions, RunOutcome};

pub(super) enum Done {
    Step(usize, u32, Result<Value, StepError>),
    /// What a step would change, described by its plugin (a plan).
    Planned(usize, Result<Value, StepError>),
    Probe(usize, Result<Value, StepError>),
}

/// How long the bookkeeping of `read` steps may wait to share a commit with later transitions.
/// Anything that precedes a side effect is committed (with fsync) before it regardless, so a crash
/// within this window can only cost re-running reads.
const GROUP_COMMIT: Duration = Duration::from_millis(10);

/// How often the live view is told the latest progress line of each step in flight.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// How long a plugin may take to describe the change an approval request is about.
const PLAN_FOR_APPROVAL: Duration = Duration::from_secs(10);

/// How often a run waiting for approval looks for answers given by other processes.
const ANSWER_POLL: Duration = Duration::from_secs(1);

/// How often a driven run looks for requests other processes left for it (a cancel, a note).
const REQUEST_POLL: Duration = Duration::from_secs(1);

pub struct Driver {
    pub(super) plan: Arc<Plan>,
    pub(super) store: Arc<dyn Store>,
    pub(super) engine: crate::Engine,
    pub(super) opts: RunOptions,
    pub(super) observer: Box<dyn Observer>,
    pub(super) answers: Option<mpsc::UnboundedReceiver<Answer>>,
    pub(super) chain: Chain,
    pub(super) state: RunState,
    pending: Vec<Record>,
    /// When the oldest uncommitted event was emitted.
    pending_since: Option<tokio::time::Instant>,
    /// params, vars, connections, run (and env, if anything reads it): the context every step shares.
    base: Map<String, Value>,
    pub(super) tasks: JoinSet<Done>,
    /// Cancelled to stop every plugin call in flight (a cancelled run); Ctrl-C cancels it too.
    pub(super) stopping: tokio_util::sync::CancellationToken,
    /// Process groups plugins report having started, to be journaled at once.
    pub(super) processes_tx: mpsc::UnboundedSender<(String, runbook_steps::process::Group)>,
    processes_rx: mpsc::UnboundedReceiver<(String, runbook_steps::process::Group)>,
    /// The progress lines of the plugin calls in flight; read for the live view a few times a second.
    pub(super) watching: Vec<(String, tokio::sync::watch::Receiver<String>)>,
    pub(super) holder: Holder,
    /// Masks secrets before an event is sealed.
    redactor: super::redact::Redactor,
    /// Who started the run (an approval may have to come from someone else).
    pub(super) initiator: String,
    /// The run's connections, built once; steps share them and the clients made from them.
    pub(super) connections: super::connections::Connections,
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
    pub connections: super::connections::Connections,
}

impl Driver {
    pub(super) fn new(
        store: Arc<dyn Store>,
        engine: &crate::Engine,
        opts: RunOptions,
        hooks: Hooks,
        at: Position,
    ) -> Driver {
        let (processes_tx, processes_rx) = mpsc::unbounded_channel();
        let holder = opts.holder.clone().unwrap_or_else(Holder::this_process);
        let stopping = opts.cancel.child_token();
        Driver {
            processes_tx,
            processes_rx,
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
            stopping,
            watching: Vec::new(),
            holder,
            redactor: at.redactor,
            initiator: at.initiator,
            connections: at.connections,
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
    pub(super) fn emit_at(&mut self, event: Event, at_ms: i64) {
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

    pub(super) fn prep(&self) -> Prep<'_> {
        Prep {
            plan: &self.plan,
            state: &self.state,
            expr: &self.engine.expr,
            registry: &self.engine.registry,
            base: &self.base,
            planning: self.opts.plan,
        }
    }

    /// Drives the run while holding its lease, and lets the lease go however driving ends.
    pub(super) async fn drive_leased(mut self) -> Result<RunOutcome, DriverError> {
        let result = self.drive().await;
        // A run that ended, parked or waits let its lease go in the commit that said so (the
        // store deletes it with any status but running); after an error it is released here. A
        // lease left behind only delays the next resume until it expires.
        if !matches!(&result, Ok(status) if *status != RunStatus::Running) {
            let _ = self
                .store
                .release_lease(&self.chain.run_id, &self.holder.encode())
                .await;
        }
        let started_at = self.base["run"]["started_at"]
            .as_i64()
            .unwrap_or_else(now_ms);
        result.map(|status| RunOutcome {
            run_id: self.chain.run_id.clone(),
            status,
            started_at,
        })
    }

    async fn drive(&mut self) -> Result<RunStatus, DriverError> {
        let mut heartbeat = tokio::time::interval(lease::RENEW);
        heartbeat.tick().await;
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut poll = tokio::time::interval(ANSWER_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut requests = tokio::time::interval(REQUEST_POLL);
        requests.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A request left while no process drove the run (what woke it) is taken before anything starts.
        requests.tick().await;
        if let Some(status) = self.take_requests().await? {
            return Ok(status);
        }
        loop {
            self.take_answers_given_here();
            let next = decide(
                &self.plan,
                &self.state,
                now_ms(),
                self.opts.max_parallel.max(1),
            );
            // Draining: rather than start more, hand the run on (waits park as usual below).
            if self.opts.detach && self.opts.drain.is_cancelled() && self.tasks.is_empty() {
                let ends = next
                    .actions
                    .iter()
                    .any(|a| matches!(a, Action::Finish(_) | Action::Park(_)));
                if !ends && !next.actions.is_empty() {
                    return self.detach(&next, Some(now_ms())).await;
                }
            }
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
                if let Some(status) = self.take_requests().await? {
                    return Ok(status);
                }
                if self.chain.next_seq != seq {
                    continue;
                }
                return self.detach(&next, next.wake_at_ms).await;
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
                _ = requests.tick() => {
                    if let Some(status) = self.take_requests().await? {
                        return Ok(status);
                    }
                }
                _ = progress.tick(), if !self.watching.is_empty() => self.show_progress(),
                Some((step, group)) = self.processes_rx.recv() => {
                    if let Some(&i) = self.plan.index.get(&step) {
                        let attempt = self.state.steps[i].attempt;
                        self.emit(Event::StepProcess { step, attempt, group });
                        // Found after a crash only if it is committed: do not wait for the group.
                        self.flush(Durability::Process).await?;
                    }
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
                Action::PlanAfter(i, why) => {
                    let p = self.prep().plan_after(*i, why, now);
                    self.carry_out(*i, p, now).await?;
                }
                Action::ExpireApproval(i) => {
                    let e = self.prep().expire_approval(*i);
                    self.emit_at(e, now);
                }
                Action::Park(waiting) => {
                    // A request left just now must not wait for the operator with the run.
                    if let Some(status) = self.take_requests().await? {
                        return Ok(Some(status));
                    }
                    let waiting_for = waiting
                        .iter()
                        .map(|&i| self.plan.id(i).to_string())
                        .collect();
                    self.emit(Event::RunParked { waiting_for });
                    self.flush(Durability::Power).await?;
                    return Ok(Some(RunStatus::Waiting));
                }
                Action::Finish(status) => {
                    // A note (or a cancel) left while the run ended is journaled before its end.
                    if let Some(cancelled) = self.take_requests().await? {
                        return Ok(Some(cancelled));
                    }
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

    /// The run only waits (or is handed on, due at once): journal what for, and let any process
    /// continue it from `wake_at_ms`.
    async fn detach(
        &mut self,
        next: &Next,
        wake_at_ms: Option<i64>,
    ) -> Result<RunStatus, DriverError> {
        let approvals = next
            .awaiting_approval
            .iter()
            .map(|&i| self.plan.id(i).to_string())
            .collect();
        self.emit(Event::RunDetached {
            wake_at_ms,
            approvals,
        });
        self.flush(Durability::Power).await?;
        Ok(RunStatus::Parked)
    }

    /// Journals what a step's rules decided and performs its effect.
    async fn carry_out(&mut self, i: usize, p: Prepared, now: i64) -> Result<(), DriverError> {
        // A wait's deadline must survive a crash at once, or a resumed run would wait anew.
        let durable_wait = p
            .events
            .iter()
            .any(|e| matches!(e, Event::WaitStarted { .. }));
        for e in p.events {
            self.emit_at(e, now);
        }
        if durable_wait {
            self.flush(Durability::Process).await?;
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
                let call = self.call_of(i, uses, inputs).run(deadline_ms, timeout_text);
                self.tasks
                    .spawn(async move { Done::Step(i, attempt, call.await) });
            }
            Effect::RequestApproval {
                mut request,
                inputs,
                class,
            } => {
                // The evidence is worth a short wait, not a stuck run: a plugin that cannot say
                // within PLAN_FOR_APPROVAL leaves the request with the inputs and class alone.
                let uses = self.plan.steps[i].def.uses.name.clone();
                let planner = self.call_of(i, uses, inputs).describe(class, true);
                let described = tokio::time::timeout(PLAN_FOR_APPROVAL, planner).await;
                if let (Event::ApprovalRequested { plan, .. }, Ok(Ok(p))) =
                    (&mut request, described)
                {
                    *plan = Some(p);
                }
                self.emit_at(request, now);
            }
            Effect::Plan { inputs, class } => {
                let uses = self.plan.steps[i].def.uses.name.clone();
                let approval = self.plan.steps[i].def.approval;
                let planner = self.call_of(i, uses, inputs).describe(class, approval);
                self.tasks
                    .spawn(async move { Done::Planned(i, planner.await) });
            }
            Effect::Probe {
                uses,
                input,
                deadline_ms,
            } => {
                let call = self.call_of(i, uses, input).run(Some(deadline_ms), None);
                self.tasks.spawn(async move {
                    let r = call.await;
                    Done::Probe(i, r)
                });
            }
        }
        Ok(())
    }

    fn finished(
        &mut self,
        joined: Result<Done, tokio::task::JoinError>,
    ) -> Result<(), DriverError> {
        if self.opts.cancel.is_cancelled() {
            // A call that ended because the run was stopped has no outcome: the journal must show
            // it in flight, for the resume to re-run it (or ask about it).
            return Ok(());
        }
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
            Done::Planned(i, Ok(plan)) => self.emit_at(
                Event::StepPlanned {
                    step: self.plan.id(i).to_string(),
                    plan,
                },
                now,
            ),
            Done::Planned(i, Err(err)) => {
                let attempt = self.state.steps[i].attempt;
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
}
