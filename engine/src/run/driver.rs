//! The driver: performs what [`decide`](super::decide) returns, runs plugins, and journals every
//! transition.
//!
//! Durability (DESIGN §5): the intent (`StepStarted`) of an `idempotent` or `unsafe` step is committed
//! with fsync before the side effect starts. Everything else rides on cheaper commits that survive a
//! killed process, and transitions that happen together share one transaction.

use super::decide::{Action, decide};
use super::event::{Chain, Event, Record, RunStatus, now_ms};
use super::state::RunState;
use crate::expr::{Expr, to_json};
use crate::runbook::plan::{Plan, PlanStep, StepKind};
use crate::store::{Durability, RunRow, Store, StoreError};
use runbook_steps::{
    ErrorKind, Registry, Runner, SideEffect, StepContext, StepError, parse_duration,
};
use serde_json::{Map, Value, json};
use sha2::Digest as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Setup(String),
    /// The run cannot be resumed as asked; nothing was written.
    #[error("{0}")]
    Refused(String),
}

/// What an operator said about steps left in `unknown`.
pub type OperatorDecisions = Vec<(String, super::event::OperatorAction)>;

/// A person's (or a flag's) answer to an approval request.
#[derive(Debug, Clone)]
pub enum Approval {
    Granted { by: String, how: String },
    Refused { reason: String },
}

/// What the driver tells the outside world while it works: the live view, and approvals.
pub trait Observer: Send {
    fn on_event(&mut self, _plan: &Plan, _record: &Record, _event: &Event) {}
    fn on_progress(&mut self, _step: &str, _line: &str) {}
    /// `class` is this call's side-effect class (it can depend on the input, e.g. an HTTP method).
    fn approve(&mut self, step: &PlanStep, class: SideEffect, inputs: &Value) -> Approval;
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub actor: String,
    pub max_parallel: usize,
}

#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run_id: String,
    pub status: RunStatus,
}

/// The source a run was started from, stored with it.
pub struct Source<'a> {
    pub text: &'a str,
    pub sha256: String,
    pub path: Option<String>,
    /// Set when this run re-runs another from one of its steps.
    pub rerun: Option<Rerun>,
}

/// A re-run: the parent run, the step it restarts from, and the outcomes it reuses.
pub struct Rerun {
    pub parent: String,
    pub from: String,
    pub reused: Vec<Event>,
}

/// The outcomes a re-run from step `from` takes over from the parent run's state: every step that is
/// neither `from` nor downstream of it, and that succeeded, was skipped, or failed in a way the
/// runbook lets the run continue past.
pub fn reuse_before(plan: &Plan, parent: &RunState, parent_id: &str, from: usize) -> Vec<Event> {
    let mut downstream = vec![false; plan.steps.len()];
    let mut stack = vec![from];
    while let Some(i) = stack.pop() {
        if !downstream[i] {
            downstream[i] = true;
            stack.extend(&plan.steps[i].succs);
        }
    }
    plan.order
        .iter()
        .filter(|&&i| !downstream[i])
        .filter_map(|&i| {
            let st = &parent.steps[i];
            let continued = matches!(
                plan.steps[i].def.on_failure,
                crate::runbook::OnFailure::Continue
            );
            let status = match st.status {
                super::state::Status::Succeeded => "succeeded",
                super::state::Status::Skipped => "skipped",
                super::state::Status::Failed if continued => "failed",
                _ => return None,
            };
            let (kind, reason) = match (&st.error, st.status) {
                (Some((k, m)), super::state::Status::Failed) => (Some(*k), Some(m.clone())),
                _ => (None, st.skip_reason.clone()),
            };
            Some(Event::StepReused {
                step: plan.id(i).to_string(),
                from_run: parent_id.to_string(),
                status: status.to_string(),
                kind,
                result: st.result.clone(),
                outputs: st.outputs.clone(),
                chosen: st.chosen.clone(),
                reason,
            })
        })
        .collect()
}

type TaskResult = (usize, u32, Result<Value, StepError>);

/// How long the bookkeeping of `read` steps may wait to share a commit with later transitions.
/// Anything that precedes a side effect is committed (with fsync) before it regardless, so a crash
/// within this window can only cost re-running reads.
const GROUP_COMMIT: Duration = Duration::from_millis(10);

/// How long a run's lease lasts without renewal, and how often the driver renews it.
const LEASE_TTL_MS: i64 = 15_000;
const LEASE_RENEW: Duration = Duration::from_secs(5);

/// Fault injection for the crash tests: `RUNBOOK_TEST_CRASH=before:K` (or `after:K`) kills the
/// process outright just before (after) its K-th journal commit, so every commit boundary can be
/// crashed at deterministically. Unset, it costs one cached lookup per commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashWhen {
    Before,
    After,
}

static COMMITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn crash_point() -> Option<(CrashWhen, u64)> {
    static POINT: std::sync::OnceLock<Option<(CrashWhen, u64)>> = std::sync::OnceLock::new();
    *POINT.get_or_init(|| {
        let v = std::env::var("RUNBOOK_TEST_CRASH").ok()?;
        let (when, k) = v.split_once(':')?;
        let when = match when {
            "before" => CrashWhen::Before,
            "after" => CrashWhen::After,
            _ => return None,
        };
        Some((when, k.parse().ok()?))
    })
}

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// This process's lease holder name: `host:pid:nonce`.
fn holder_name() -> String {
    let nonce = uuid::Uuid::now_v7().simple().to_string();
    format!("{}:{}:{}", this_host(), std::process::id(), &nonce[24..])
}

/// A holder that is a process of this host which no longer exists cannot be driving the run: its
/// lease need not be waited out.
pub(crate) fn is_dead_local_holder(holder: &str) -> bool {
    let mut parts = holder.split(':');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    host == this_host()
        && pid.parse::<u32>().is_ok_and(|p| p != std::process::id())
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Takes the run's lease or explains who has it.
async fn take_lease(store: &dyn Store, run_id: &str, holder: &str) -> Result<(), DriverError> {
    let stale = store
        .lease(run_id)
        .await?
        .map(|(h, _)| h)
        .filter(|h| is_dead_local_holder(h));
    let now = now_ms();
    match store
        .acquire_lease(run_id, holder, now, now + LEASE_TTL_MS, stale.as_deref())
        .await?
    {
        None => Ok(()),
        Some((other, until)) => Err(DriverError::Refused(format!(
            "run {run_id} is being driven by {other} (its lease runs for another {}s); a run is driven by one process at a time",
            (until - now).max(0) / 1000
        ))),
    }
}
pub struct Driver<'a> {
    plan: Arc<Plan>,
    store: &'a dyn Store,
    registry: Arc<Registry>,
    expr: Arc<Expr>,
    opts: RunOptions,
    observer: &'a mut dyn Observer,
    chain: Chain,
    state: RunState,
    pending: Vec<Record>,
    /// When the oldest uncommitted event was emitted.
    pending_since: Option<tokio::time::Instant>,
    /// params, vars, connections, run (and env, if anything reads it): the context every step shares.
    base: Map<String, Value>,
    tasks: JoinSet<TaskResult>,
    progress_tx: tokio::sync::mpsc::UnboundedSender<(String, String)>,
    progress_rx: tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    /// This process's name on the run's lease.
    holder: String,
    /// Masks secrets before an event is sealed.
    redactor: super::redact::Redactor,
}

fn env_map() -> Value {
    Value::Object(
        std::env::vars()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

impl<'a> Driver<'a> {
    /// Starts a new run of `plan` with checked `params`, and drives it to its end (or Ctrl-C).
    pub async fn start(
        plan: Arc<Plan>,
        store: &'a dyn Store,
        engine: &crate::Engine,
        source: Source<'_>,
        params: Map<String, Value>,
        opts: RunOptions,
        observer: &'a mut dyn Observer,
    ) -> Result<RunOutcome, DriverError> {
        let expr = Arc::clone(&engine.expr);
        let run_id = uuid::Uuid::now_v7().simple().to_string();
        let started_at = now_ms();
        let run_info = json!({"id": run_id, "runbook": plan.runbook.name, "actor": opts.actor, "started_at": started_at});
        let (base, vars) = base_context(&plan, &expr, &params, None, run_info)?;
        let redactor = super::redact::Redactor::new(base.get("connections"));

        let mut chain = Chain::new(&run_id);
        let mut first = Event::RunStarted {
            runbook: plan.runbook.name.clone(),
            runbook_sha256: source.sha256.clone(),
            params: params.clone(),
            vars: vars.clone(),
            engine_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        redactor.event(&mut first);
        let rec = chain.seal(started_at, &opts.actor, &first);
        let row = RunRow {
            id: run_id.clone(),
            runbook: plan.runbook.name.clone(),
            title: plan.runbook.title.clone(),
            source_path: source.path,
            runbook_sha256: source.sha256,
            runbook_text: source.text.to_string(),
            params: match &first {
                Event::RunStarted { params, .. } => Value::Object(params.clone()),
                _ => Value::Object(Map::new()),
            },
            status: RunStatus::Running,
            actor: opts.actor.clone(),
            started_at,
            finished_at: None,
            parent_run: source.rerun.as_ref().map(|r| r.parent.clone()),
        };
        store.create_run(&row, std::slice::from_ref(&rec)).await?;
        let mut state = RunState::new(&plan);
        state.apply(&plan, &first);
        observer.on_event(&plan, &rec, &first);
        let mut d = Driver::new(
            plan,
            store,
            engine,
            opts,
            observer,
            (chain, state, base),
            redactor,
        );
        take_lease(store, &run_id, &d.holder).await?;
        if let Some(r) = source.rerun {
            d.emit(Event::RerunOf {
                parent_run: r.parent,
                from_step: r.from,
            });
            for e in r.reused {
                d.emit(e);
            }
        }
        let status = d.drive_leased().await?;
        Ok(RunOutcome { run_id, status })
    }

    /// Picks up a stopped run from its journal and drives it on. Completed steps and recorded decisions
    /// stand; steps in flight at the stop are re-run if `read` or `idempotent` and become `unknown`
    /// (parking the run) if `unsafe`, unless `decisions` settle them.
    pub async fn resume(
        store: &'a dyn Store,
        engine: &crate::Engine,
        run_id: &str,
        decisions: OperatorDecisions,
        newer: Option<String>,
        opts: RunOptions,
        observer: &'a mut dyn Observer,
    ) -> Result<RunOutcome, DriverError> {
        use super::event::Recovery;
        let run = store.run(run_id).await?;
        if matches!(run.status, RunStatus::Succeeded | RunStatus::Failed) {
            return Err(DriverError::Refused(format!(
                "run {} already {}; there is nothing to resume",
                run.id, run.status
            )));
        }
        let records = store.events(&run.id).await?;
        if let Err(b) = super::integrity::verify(&run, &records) {
            return Err(DriverError::Refused(super::integrity::refusal(&run.id, &b)));
        }
        let mut events = Vec::with_capacity(records.len());
        for r in &records {
            events.push(r.event().map_err(|e| {
                DriverError::Refused(format!(
                    "event {} of run {} is unreadable: {e}",
                    r.seq, run.id
                ))
            })?);
        }
        let followed = super::event::current_text(&run.runbook_text, &events).to_string();
        let label = run.source_path.as_deref().unwrap_or("stored runbook");
        let (text, switched) = match newer {
            Some(new_text) if new_text != followed => (new_text, true),
            _ => (followed, false),
        };
        let plan = crate::runbook::validate::check(label, &text, &engine.registry, &engine.expr)
            .map_err(|r| {
                DriverError::Setup(format!(
                    "the {} runbook does not validate:\n{}",
                    if switched { "new" } else { "stored" },
                    r.render(false)
                ))
            })?;
        let plan = Arc::new(plan);
        let state = RunState::fold(&plan, &events);
        let Some(Event::RunStarted { params, vars, .. }) = events.first() else {
            return Err(DriverError::Refused(format!(
                "run {} has no run_started event",
                run.id
            )));
        };
        // What was in flight, and what the class of that attempt was.
        let mut recoveries = Vec::new();
        for (i, st) in state.steps.iter().enumerate() {
            if st.status != super::state::Status::Running {
                continue;
            }
            let class = events
                .iter()
                .rev()
                .find_map(|e| match e {
                    Event::StepStarted { step, class, .. } if step == plan.id(i) => Some(*class),
                    _ => None,
                })
                .unwrap_or(SideEffect::Unsafe);
            let outcome = if class == SideEffect::Unsafe {
                Recovery::Unknown
            } else {
                Recovery::Rerun
            };
            recoveries.push((i, st.attempt, outcome));
        }
        // Operator decisions may only settle steps whose outcome is unknown (now or from before).
        let unknown: Vec<&str> = (0..plan.steps.len())
            .filter(|&i| {
                state.steps[i].status == super::state::Status::Unknown
                    || recoveries
                        .iter()
                        .any(|r| r.0 == i && r.2 == Recovery::Unknown)
            })
            .map(|i| plan.id(i))
            .collect();
        for (step, _) in &decisions {
            if !unknown.contains(&step.as_str()) {
                return Err(DriverError::Refused(if plan.index.contains_key(step) {
                    format!(
                        "step `{step}` is not waiting for an operator{}",
                        if unknown.is_empty() {
                            String::new()
                        } else {
                            format!(" (these are: {})", unknown.join(", "))
                        }
                    )
                } else {
                    format!("run {} has no step `{step}`", run.id)
                }));
            }
        }
        let last = records
            .last()
            .map_or((1, super::event::GENESIS.to_string()), |r| {
                (r.seq + 1, r.hash.clone())
            });
        let chain = Chain {
            run_id: run.id.clone(),
            next_seq: last.0,
            last_hash: last.1,
        };
        let run_info = json!({"id": run.id, "runbook": plan.runbook.name, "actor": opts.actor, "started_at": run.started_at});
        let (base, _) = base_context(&plan, &engine.expr, params, Some(vars), run_info)?;
        let redactor = super::redact::Redactor::new(base.get("connections"));
        let mut d = Driver::new(
            Arc::clone(&plan),
            store,
            engine,
            opts,
            observer,
            (chain, state, base),
            redactor,
        );
        take_lease(store, &run.id, &d.holder).await?;
        let runbook_sha256 = hex::encode(sha2::Sha256::digest(text.as_bytes()));
        d.emit(Event::RunResumed {
            runbook_sha256,
            runbook_text: switched.then(|| text.clone()),
        });
        for (i, attempt, outcome) in recoveries {
            d.emit(Event::StepRecovered {
                step: plan.id(i).to_string(),
                attempt,
                outcome,
            });
        }
        for (step, action) in decisions {
            let by = d.opts.actor.clone();
            d.emit(Event::OperatorDecided { step, action, by });
        }
        d.flush(Durability::Power).await?;
        let status = d.drive().await?;
        Ok(RunOutcome {
            run_id: run.id,
            status,
        })
    }

    /// A driver for a run whose journal position, state and shared context are known.
    fn new(
        plan: Arc<Plan>,
        store: &'a dyn Store,
        engine: &crate::Engine,
        opts: RunOptions,
        observer: &'a mut dyn Observer,
        (chain, state, base): (Chain, RunState, Json),
        redactor: super::redact::Redactor,
    ) -> Driver<'a> {
        let (progress_tx, progress_rx) = tokio::sync::mpsc::unbounded_channel();
        Driver {
            plan,
            store,
            registry: Arc::clone(&engine.registry),
            expr: Arc::clone(&engine.expr),
            opts,
            observer,
            chain,
            state,
            pending: Vec::new(),
            pending_since: None,
            base,
            tasks: JoinSet::new(),
            progress_tx,
            progress_rx,
            holder: holder_name(),
            redactor,
        }
    }

    fn emit(&mut self, event: Event) {
        self.emit_at(event, now_ms());
    }

    /// Journals an event as of `at_ms`: a timer's start events carry the instant its deadline was
    /// computed from, so the journal says exactly "started at T, due at T + d".
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

    async fn flush(&mut self, durability: Durability) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let crash = crash_point();
        let n = COMMITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if crash == Some((CrashWhen::Before, n)) {
            std::process::abort();
        }
        self.store.append(&self.pending, durability).await?;
        if crash == Some((CrashWhen::After, n)) {
            std::process::abort();
        }
        self.pending.clear();
        self.pending_since = None;
        Ok(())
    }

    /// Drives the run while holding its lease, and lets the lease go however driving ends.
    async fn drive_leased(&mut self) -> Result<RunStatus, DriverError> {
        let result = self.drive().await;
        let run_id = self.chain.run_id.clone();
        // A lease left behind only delays the next resume until it expires.
        let _ = self.store.release_lease(&run_id, &self.holder).await;
        result
    }

    async fn drive(&mut self) -> Result<RunStatus, DriverError> {
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut heartbeat = tokio::time::interval(LEASE_RENEW);
        heartbeat.tick().await;
        loop {
            let next = decide(
                &self.plan,
                &self.state,
                now_ms(),
                self.opts.max_parallel.max(1),
            );
            let acted = !next.actions.is_empty();
            for action in next.actions {
                match action {
                    Action::Skip(i, reason) => self.emit(Event::StepSkipped {
                        step: self.plan.id(i).to_string(),
                        reason,
                    }),
                    Action::Start(i) => self.start_step(i).await?,
                    Action::Park(waiting) => {
                        let waiting_for = waiting
                            .iter()
                            .map(|&i| self.plan.id(i).to_string())
                            .collect();
                        self.emit(Event::RunParked { waiting_for });
                        self.flush(Durability::Power).await?;
                        return Ok(RunStatus::Waiting);
                    }
                    Action::Finish(status) => {
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
                        return Ok(status);
                    }
                }
            }
            if acted {
                continue;
            }
            // Nothing more can happen until a step finishes or a timer fires. Commit what happened
            // if it has waited long enough; otherwise let it share a commit with what comes next.
            let flush_at = self.pending_since.map(|t| t + GROUP_COMMIT);
            if flush_at.is_some_and(|t| t <= tokio::time::Instant::now()) {
                self.flush(Durability::Process).await?;
                continue;
            }
            let wake = next.wake_at_ms.map(|at| {
                let ms = u64::try_from(at - now_ms()).unwrap_or(0);
                tokio::time::Instant::now() + Duration::from_millis(ms)
            });
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
                _ = heartbeat.tick() => {
                    let until = now_ms() + LEASE_TTL_MS;
                    if !self.store.renew_lease(&self.chain.run_id, &self.holder, until).await? {
                        // Someone else drives the run now; acting on would do everything twice.
                        self.tasks.abort_all();
                        return Err(DriverError::Refused(format!(
                            "lost the lease of run {} to another process; stopped",
                            self.chain.run_id
                        )));
                    }
                }
                Some((step, line)) = self.progress_rx.recv() => {
                    self.observer.on_progress(&step, &line);
                }
                _ = &mut ctrl_c => {
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

    fn finished(
        &mut self,
        joined: Result<TaskResult, tokio::task::JoinError>,
    ) -> Result<(), DriverError> {
        let (i, attempt, result) = match joined {
            Ok(r) => r,
            // A panicking plugin is a bug; it must not take the run's journal with it.
            Err(e) => {
                return Err(DriverError::Setup(format!("a step task failed: {e}")));
            }
        };
        match result {
            Ok(result) => self.succeed(i, attempt, result),
            Err(e) => self.fail(i, attempt, e),
        }
        Ok(())
    }

    /// A step's result is in: compute its outputs, and record success (or the outputs' failure).
    fn succeed(&mut self, i: usize, attempt: u32, result: Value) {
        match self.outputs(i, &result) {
            Ok(outputs) => self.emit(Event::StepSucceeded {
                step: self.plan.id(i).to_string(),
                attempt,
                result,
                outputs,
            }),
            Err(e) => self.fail(i, attempt, e),
        }
    }

    fn fail(&mut self, i: usize, attempt: u32, e: StepError) {
        let retry_at_ms = self.plan.steps[i].def.retry.as_ref().and_then(|r| {
            (attempt < r.attempts && r.retries(e.kind)).then(|| {
                let wait = r.backoff(attempt + 1);
                now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2)
            })
        });
        self.emit(Event::StepFailed {
            step: self.plan.id(i).to_string(),
            attempt,
            kind: e.kind,
            error: e.message,
            detail: e.detail,
            retry_at_ms,
        });
    }

    /// The template context for step `i`: the shared base plus the steps it reads (and `result`).
    fn context(&self, i: usize, result: Option<&Value>) -> minijinja::Value {
        let ps = &self.plan.steps[i];
        let mut m = self.base.clone();
        let mut steps = Map::new();
        for &j in &ps.reads_steps {
            let st = &self.state.steps[j];
            let mut o = st.outputs.clone();
            o.insert("status".into(), Value::String(st.status.as_str().into()));
            if let Some(r) = &st.result {
                o.insert("result".into(), r.clone());
            }
            if let Some((kind, msg)) = &st.error {
                o.insert("error".into(), json!({"kind": kind, "message": msg}));
            }
            steps.insert(self.plan.id(j).to_string(), Value::Object(o));
        }
        m.insert("steps".into(), Value::Object(steps));
        if let Some(r) = result {
            m.insert("result".into(), r.clone());
        }
        minijinja::Value::from(minijinja::value::Serde(&m))
    }

    fn outputs(&self, i: usize, result: &Value) -> Result<Map<String, Value>, StepError> {
        let ps = &self.plan.steps[i];
        let mut out = Map::new();
        if ps.def.outputs.is_empty() {
            return Ok(out);
        }
        let ctx = self.context(i, Some(result));
        for o in &ps.def.outputs {
            let v = self.expr.render_str(&o.template, &ctx).map_err(|e| {
                StepError::new(ErrorKind::Input, format!("output `{}`: {e}", o.name.name))
            })?;
            out.insert(o.name.name.clone(), v);
        }
        Ok(out)
    }

    fn render(&self, v: &Value, ctx: &minijinja::Value) -> Result<Value, StepError> {
        self.expr
            .render_value(v, ctx)
            .map_err(|e| StepError::new(ErrorKind::Input, e.to_string()))
    }

    fn duration(
        &self,
        v: &Value,
        ctx: &minijinja::Value,
        what: &str,
    ) -> Result<Duration, StepError> {
        let v = self.render(v, ctx)?;
        let text = match &v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => other.to_string(),
        };
        parse_duration(&text).map_err(|e| StepError::new(ErrorKind::Input, format!("{what}: {e}")))
    }

    async fn start_step(&mut self, i: usize) -> Result<(), DriverError> {
        let plan = Arc::clone(&self.plan);
        let ps = &plan.steps[i];
        let step = ps.def.id.name.clone();
        let attempt = self.state.steps[i].attempt + 1;
        let ctx = if ps.has_templates {
            self.context(i, None)
        } else {
            minijinja::Value::UNDEFINED
        };
        // The guard is checked on every attempt: a retry must not bypass it.
        if let Some((cond, _)) = &ps.def.when {
            match self.expr.eval_condition(cond, &ctx) {
                Ok(d) => {
                    self.emit(Event::GuardEvaluated {
                        step: step.clone(),
                        condition: cond.clone(),
                        holds: d.holds,
                        values: d.values.into_iter().collect(),
                    });
                    if !d.holds {
                        self.emit(Event::StepSkipped {
                            step,
                            reason: format!("`when: {cond}` was false"),
                        });
                        return Ok(());
                    }
                }
                Err(e) => {
                    self.fail_at_start(i, attempt, ErrorKind::Input, format!("`when`: {e}"));
                    return Ok(());
                }
            }
        }
        match &ps.kind {
            StepKind::Branch { cases, default } => {
                self.emit(Event::StepStarted {
                    step: step.clone(),
                    attempt,
                    class: SideEffect::Read,
                    inputs: Value::Null,
                    deadline_ms: None,
                });
                let mut values = Map::new();
                let mut chosen: Option<(Option<usize>, Option<String>, Vec<usize>)> = None;
                for (n, case) in cases.iter().enumerate() {
                    match self.expr.eval_condition(&case.when, &ctx) {
                        Ok(d) => {
                            values.extend(d.values);
                            if d.holds {
                                chosen =
                                    Some((Some(n), Some(case.when.clone()), case.then.clone()));
                                break;
                            }
                        }
                        Err(e) => {
                            let e =
                                StepError::new(ErrorKind::Input, format!("case {}: {e}", n + 1));
                            self.fail(i, attempt, e);
                            return Ok(());
                        }
                    }
                }
                let (case, condition, taken) = chosen.unwrap_or((None, None, default.clone()));
                let mut all: Vec<usize> = cases
                    .iter()
                    .flat_map(|c| c.then.clone())
                    .chain(default.clone())
                    .collect();
                all.sort_unstable();
                all.dedup();
                let names = |v: &[usize]| {
                    v.iter()
                        .map(|&t| plan.id(t).to_string())
                        .collect::<Vec<_>>()
                };
                let not_taken: Vec<usize> =
                    all.into_iter().filter(|t| !taken.contains(t)).collect();
                let taken_names = names(&taken);
                self.emit(Event::DecisionTaken {
                    step,
                    case,
                    condition: condition.clone(),
                    values,
                    taken: taken_names.clone(),
                    not_taken: names(&not_taken),
                });
                self.succeed(
                    i,
                    attempt,
                    json!({"case": case, "taken": taken_names, "condition": condition}),
                );
            }
            StepKind::Assert { that, message } => {
                self.emit(Event::StepStarted {
                    step: step.clone(),
                    attempt,
                    class: SideEffect::Read,
                    inputs: json!({"that": that}),
                    deadline_ms: None,
                });
                match self.expr.eval_condition(that, &ctx) {
                    Ok(d) if d.holds => {
                        self.succeed(i, attempt, json!({"holds": true, "values": d.values}))
                    }
                    Ok(d) => {
                        let msg = match message.as_ref().map(|m| self.render(m, &ctx)) {
                            Some(Ok(Value::String(s))) => s,
                            Some(Ok(v)) => v.to_string(),
                            _ => format!("assertion failed: {that}"),
                        };
                        let values: Map<String, Value> = d.values.into_iter().collect();
                        self.fail(
                            i,
                            attempt,
                            StepError::new(ErrorKind::Condition, msg)
                                .with_detail(json!({"that": that, "values": values})),
                        );
                    }
                    Err(e) => {
                        self.fail(i, attempt, StepError::new(ErrorKind::Input, e.to_string()))
                    }
                }
            }
            StepKind::Sleep { duration } => {
                let d = match self.duration(duration, &ctx, "`for`") {
                    Ok(d) => d,
                    Err(e) => {
                        self.fail_at_start(i, attempt, e.kind, e.message);
                        return Ok(());
                    }
                };
                // A resumed sleep keeps the wake-up time it journaled; `slept_ms` counts from the
                // moment that time was set.
                let now = now_ms();
                let deadline = self.state.steps[i].wait_deadline_ms.unwrap_or(now + ms(d));
                let start = deadline - ms(d);
                self.emit_at(
                    Event::StepStarted {
                        step: step.clone(),
                        attempt,
                        class: SideEffect::Read,
                        inputs: json!({"for": duration}),
                        deadline_ms: Some(deadline),
                    },
                    now,
                );
                self.emit_at(
                    Event::WaitStarted {
                        step,
                        deadline_ms: deadline,
                    },
                    now,
                );
                // The wake-up time must survive a crash, or a resumed run would sleep anew.
                self.flush(Durability::Process).await?;
                self.tasks.spawn(async move {
                    sleep_until_ms(deadline).await;
                    (i, attempt, Ok(json!({"slept_ms": now_ms() - start})))
                });
            }
            StepKind::WaitUntil {
                probe_uses,
                probe_with,
                until,
                deadline,
                interval,
                hold,
            } => {
                let parsed = (|| {
                    let dl = self.duration(deadline, &ctx, "`deadline`")?;
                    let iv = match interval {
                        Some(v) => self.duration(v, &ctx, "`interval`")?,
                        None => Duration::from_secs(30),
                    };
                    let hold = match hold {
                        Some(v) => Some(self.duration(v, &ctx, "`hold`")?),
                        None => None,
                    };
                    let input = self.render(probe_with, &ctx)?;
                    Ok::<_, StepError>((dl, iv, hold, input))
                })();
                let (dl, iv, hold, input) = match parsed {
                    Ok(p) => p,
                    Err(e) => {
                        self.fail_at_start(i, attempt, e.kind, e.message);
                        return Ok(());
                    }
                };
                let now = now_ms();
                let deadline_ms = self.state.steps[i].wait_deadline_ms.unwrap_or(now + ms(dl));
                self.emit_at(
                    Event::StepStarted {
                        step: step.clone(),
                        attempt,
                        class: SideEffect::Read,
                        inputs: json!({"probe": {"uses": probe_uses, "with": input}, "until": until}),
                        deadline_ms: Some(deadline_ms),
                    },
                    now,
                );
                self.emit_at(
                    Event::WaitStarted {
                        step: step.clone(),
                        deadline_ms,
                    },
                    now,
                );
                self.flush(Durability::Process).await?;
                let w = Wait {
                    registry: Arc::clone(&self.registry),
                    expr: Arc::clone(&self.expr),
                    uses: probe_uses.clone(),
                    input,
                    until: until.clone(),
                    base: self.base.clone(),
                    steps: match ctx.get_attr("steps") {
                        Ok(v) if !v.is_undefined() => to_json(&v).unwrap_or(Value::Null),
                        _ => Value::Null,
                    },
                    interval: iv,
                    hold,
                    deadline_ms,
                    sctx: StepContext {
                        run_id: self.chain.run_id.clone(),
                        step_id: step,
                        progress: Some(self.progress_tx.clone()),
                    },
                };
                self.tasks.spawn(async move { (i, attempt, w.run().await) });
            }
            StepKind::Plugin => {
                let Some(Runner::Plugin(plugin)) = self.registry.get(&ps.def.uses.name) else {
                    self.fail_at_start(
                        i,
                        attempt,
                        ErrorKind::Input,
                        format!("plugin `{}` is not available", ps.def.uses.name),
                    );
                    return Ok(());
                };
                let inputs = match ps.def.with.as_ref() {
                    Some(w) if ps.has_templates => match self.render(&w.to_json(), &ctx) {
                        Ok(v) => v,
                        Err(e) => {
                            self.fail_at_start(
                                i,
                                attempt,
                                e.kind,
                                format!("rendering `with`: {}", e.message),
                            );
                            return Ok(());
                        }
                    },
                    Some(w) => w.to_json(),
                    None => json!({}),
                };
                let class = ps
                    .def
                    .side_effect
                    .unwrap_or_else(|| plugin.class_for(&inputs));
                if ps.def.approval && !self.approved(i, class, &inputs, attempt) {
                    return Ok(());
                }
                // An attempt re-run after a crash keeps the deadline its first start journaled.
                let deadline_ms = match (ps.def.timeout, self.state.steps[i].deadline_ms) {
                    (Some(_), Some(kept)) => Some(kept),
                    (Some(t), None) => Some(now_ms() + ms(t)),
                    (None, _) => None,
                };
                let timeout = deadline_ms
                    .map(|d| Duration::from_millis(u64::try_from(d - now_ms()).unwrap_or(0)));
                let timeout_text = ps.def.timeout.map(runbook_steps::duration::human);
                self.emit(Event::StepStarted {
                    step: step.clone(),
                    attempt,
                    class,
                    inputs: inputs.clone(),
                    deadline_ms,
                });
                if class != SideEffect::Read {
                    // The intent must be on disk before the side effect can happen.
                    self.flush(Durability::Power).await?;
                }
                let registry = Arc::clone(&self.registry);
                let uses = ps.def.uses.name.clone();
                let sctx = StepContext {
                    run_id: self.chain.run_id.clone(),
                    step_id: step,
                    progress: Some(self.progress_tx.clone()),
                };
                self.tasks.spawn(async move {
                    let Some(Runner::Plugin(plugin)) = registry.get(&uses) else {
                        return (
                            i,
                            attempt,
                            Err(StepError::new(ErrorKind::Input, "plugin vanished")),
                        );
                    };
                    let fut = plugin.run(inputs, &sctx);
                    let r = match timeout {
                        Some(t) => match tokio::time::timeout(t, fut).await {
                            Ok(r) => r,
                            Err(_) => Err(StepError::new(
                                ErrorKind::Timeout,
                                format!(
                                    "timed out after {}",
                                    timeout_text
                                        .clone()
                                        .unwrap_or_else(|| runbook_steps::duration::human(t))
                                ),
                            )),
                        },
                        None => fut.await,
                    };
                    (i, attempt, r)
                });
            }
        }
        Ok(())
    }

    /// Asks for approval; on refusal records the failure and returns false.
    fn approved(&mut self, i: usize, class: SideEffect, inputs: &Value, attempt: u32) -> bool {
        let plan = Arc::clone(&self.plan);
        let answer =
            tokio::task::block_in_place(|| self.observer.approve(&plan.steps[i], class, inputs));
        match answer {
            Approval::Granted { by, how } => {
                self.emit(Event::ApprovalGranted {
                    step: plan.id(i).to_string(),
                    by,
                    how,
                });
                true
            }
            Approval::Refused { reason } => {
                // Journaled as the attempt it was, with its class and inputs, so an audit lists the
                // side effect that was asked for and not allowed.
                self.emit(Event::StepStarted {
                    step: plan.id(i).to_string(),
                    attempt,
                    class,
                    inputs: inputs.clone(),
                    deadline_ms: None,
                });
                self.fail(i, attempt, StepError::new(ErrorKind::Approval, reason));
                false
            }
        }
    }

    /// A failure before the step was dispatched: journal a start (so attempts add up) and the failure.
    fn fail_at_start(&mut self, i: usize, attempt: u32, kind: ErrorKind, message: String) {
        self.emit(Event::StepStarted {
            step: self.plan.id(i).to_string(),
            attempt,
            class: SideEffect::Read,
            inputs: Value::Null,
            deadline_ms: None,
        });
        self.fail(i, attempt, StepError::new(kind, message));
    }
}

/// The context every step of a run shares. Vars are rendered once, when the run starts, and journaled;
/// a resumed run passes the recorded ones so nothing is re-decided. Connections (which may hold
/// secrets from the environment) are never journaled, so they are rendered each time.
/// A JSON object: the shared context, or the run's vars.
type Json = Map<String, Value>;

fn base_context(
    plan: &Plan,
    expr: &Expr,
    params: &Map<String, Value>,
    recorded_vars: Option<&Map<String, Value>>,
    run_info: Value,
) -> Result<(Json, Json), DriverError> {
    let mut base = Map::new();
    base.insert("params".into(), Value::Object(params.clone()));
    if plan.vars_read_env || plan.steps.iter().any(|s| s.reads_env) {
        base.insert("env".into(), env_map());
    }
    let vars = match recorded_vars {
        Some(v) => v.clone(),
        None => {
            // Vars may read params, env and the vars above them.
            let mut vars = Map::new();
            base.insert("vars".into(), Value::Object(Map::new()));
            for (name, node) in &plan.runbook.vars {
                let ctx = minijinja::Value::from(minijinja::value::Serde(&base));
                let v = expr
                    .render_value(&node.to_json(), &ctx)
                    .map_err(|e| DriverError::Setup(format!("var `{}`: {e}", name.name)))?;
                vars.insert(name.name.clone(), v);
                base.insert("vars".into(), Value::Object(vars.clone()));
            }
            vars
        }
    };
    base.insert("vars".into(), Value::Object(vars.clone()));
    let mut conns = Map::new();
    for (name, node) in &plan.runbook.connections {
        let ctx = minijinja::Value::from(minijinja::value::Serde(&base));
        let v = expr
            .render_value(&node.to_json(), &ctx)
            .map_err(|e| DriverError::Setup(format!("connection `{}`: {e}", name.name)))?;
        conns.insert(name.name.clone(), v);
    }
    base.insert("connections".into(), Value::Object(conns));
    base.insert("run".into(), run_info);
    Ok((base, vars))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

async fn sleep_until_ms(deadline_ms: i64) {
    let left = u64::try_from(deadline_ms - now_ms()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(left)).await;
}

/// A `flow.wait_until` in progress.
struct Wait {
    registry: Arc<Registry>,
    expr: Arc<Expr>,
    uses: String,
    input: Value,
    until: String,
    base: Map<String, Value>,
    steps: Value,
    interval: Duration,
    hold: Option<Duration>,
    deadline_ms: i64,
    sctx: StepContext,
}

impl Wait {
    async fn run(self) -> Result<Value, StepError> {
        let Some(Runner::Plugin(plugin)) = self.registry.get(&self.uses) else {
            return Err(StepError::new(
                ErrorKind::Input,
                format!("probe plugin `{}` is not available", self.uses),
            ));
        };
        let start = now_ms();
        let mut probes = 0u64;
        let mut true_since: Option<i64> = None;
        let mut last_problem;
        loop {
            probes += 1;
            let left =
                Duration::from_millis(u64::try_from(self.deadline_ms - now_ms()).unwrap_or(0));
            let outcome =
                tokio::time::timeout(left, plugin.run(self.input.clone(), &self.sctx)).await;
            match outcome {
                Ok(Ok(result)) => {
                    let mut m = self.base.clone();
                    m.insert("steps".into(), self.steps.clone());
                    m.insert("result".into(), result.clone());
                    let ctx = minijinja::Value::from(minijinja::value::Serde(&m));
                    let d = self
                        .expr
                        .eval_condition(&self.until, &ctx)
                        .map_err(|e| StepError::new(ErrorKind::Input, format!("`until`: {e}")))?;
                    if d.holds {
                        let since = *true_since.get_or_insert_with(now_ms);
                        let held =
                            Duration::from_millis(u64::try_from(now_ms() - since).unwrap_or(0));
                        if self.hold.is_none_or(|h| held >= h) {
                            return Ok(
                                json!({"result": result, "probes": probes, "waited_ms": now_ms() - start}),
                            );
                        }
                        last_problem = format!(
                            "`{}` has held for {}",
                            self.until,
                            runbook_steps::duration::human(held)
                        );
                    } else {
                        true_since = None;
                        let vals: Vec<String> =
                            d.values.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                        last_problem = format!("`{}` is false ({})", self.until, vals.join(", "));
                    }
                }
                Ok(Err(e)) => {
                    true_since = None;
                    last_problem = format!("probe failed: {e}");
                }
                Err(_) => {
                    last_problem = "probe did not answer before the deadline".to_string();
                }
            }
            self.sctx
                .progress(format!("probe {probes}: {last_problem}"));
            let next = now_ms() + ms(self.interval);
            if next >= self.deadline_ms {
                sleep_until_ms(self.deadline_ms).await;
                return Err(StepError::new(
                    ErrorKind::Timeout,
                    format!("deadline passed after {probes} probes; last: {last_problem}"),
                ));
            }
            sleep_until_ms(next).await;
        }
    }
}
